# shellcheck shell=bash disable=SC2034 # sets variables its callers read
# Shared by benches/deliver.sh, wan.sh and duplicates.sh (sourced, not run): timing helpers, and the
# pieces of an SFTP-only OpenSSH sshd on loopback with generated keys. The caller defines die and
# log and sets WORK, SSH_DIR and HOME_DIR first.

now() { echo "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) printf "%.4f", v[(NR + 1) / 2]; else printf "%.4f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
calc() { awk "BEGIN { printf \"$1\", ($2) }"; } # calc FORMAT EXPR

kill_tree() { # kill_tree PID: TERM to PID and its direct children (sshd sessions), by pid
    local pid=$1 kids
    kids=$(ps -o pid= --ppid "$pid" 2>/dev/null || true)
    # shellcheck disable=SC2086 # $kids: one pid a word
    kill -TERM "$pid" $kids 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    # shellcheck disable=SC2086
    kill -KILL "$pid" $kids 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
banner_ok() { # banner_ok PORT: the server sends an SSH-2.0 banner
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && head -c 8 <&3' _ "$1" 2>/dev/null | grep -q '^SSH-2.0-'
}

# bench_keys: the server's home with upload/, success/, error/; a host key and a client key
# under SSH_DIR. Sets LOGIN, HOST_PUB, KEY, KNOWN (known_hosts, empty: the caller adds ports).
bench_keys() {
    mkdir -p "$SSH_DIR" "$HOME_DIR"/{upload,success,error}
    chmod 755 "$SSH_DIR" "$HOME_DIR" "$HOME_DIR"/{upload,success,error}
    LOGIN=$(id -un)
    ssh-keygen -q -t ed25519 -N '' -C smsdrop-bench-host -f "$SSH_DIR/ssh_host_ed25519_key"
    ssh-keygen -q -t ed25519 -N '' -C smsdrop-bench-client -f "$SSH_DIR/id_ed25519"
    cp "$SSH_DIR/id_ed25519.pub" "$SSH_DIR/authorized_keys"
    chmod 644 "$SSH_DIR/authorized_keys"
    HOST_PUB=$(cut -d' ' -f1-2 "$SSH_DIR/ssh_host_ed25519_key.pub")
    KEY="$SSH_DIR/id_ed25519"
    KNOWN="$SSH_DIR/known_hosts"
    : >"$KNOWN"
    if [[ $(id -u) -eq 0 ]]; then
        mkdir -p /run/sshd # privilege separation dir
        chmod 755 /run/sshd
    fi
}

# sshd_base_config: the sshd_config lines both benches share (the caller adds Port lines first
# and its ForceCommand after): key login only, as the current user, SFTP only.
sshd_base_config() {
    cat <<CFG
ListenAddress 127.0.0.1
AddressFamily inet
HostKey $SSH_DIR/ssh_host_ed25519_key
PidFile none
AuthorizedKeysFile $SSH_DIR/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowUsers $LOGIN
UseDNS no
LogLevel VERBOSE
MaxStartups 100
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTTY no
PrintMotd no
Subsystem sftp internal-sftp
CFG
}

# launch_sshd PORT...: starts sshd with SSH_DIR/sshd_config, waits for a banner on every PORT.
# Sets SSHD_PID and returns 0, or returns 1 (sshd gone or silent; SSHD_PID cleared) and 2 when
# a port was taken (the caller picks others and tries again).
launch_sshd() {
    local p up
    (cd / && exec "$SSHD" -D -E "$SSH_DIR/sshd.log" -f "$SSH_DIR/sshd_config" </dev/null >>"$SSH_DIR/sshd.stderr" 2>&1) &
    SSHD_PID=$!
    for _ in $(seq 100); do
        if ! kill -0 "$SSHD_PID" 2>/dev/null; then break; fi
        up=1
        for p in "$@"; do banner_ok "$p" || up=0; done
        ((up == 1)) && return 0
        sleep 0.1
    done
    kill_tree "$SSHD_PID"
    SSHD_PID=""
    grep -qE 'Address already in use|Cannot bind' "$SSH_DIR/sshd.log" "$SSH_DIR/sshd.stderr" 2>/dev/null && return 2
    return 1
}
sshd_failed() {
    echo "--- sshd log ---" >&2
    cat "$SSH_DIR/sshd.log" "$SSH_DIR/sshd.stderr" >&2 2>/dev/null || true
    die "sshd did not start"
}

# small_inputs FILES ROWS DIR: FILES deterministic ERP exports of ROWS rows each (header
# `telefone;mensagem;id`, formatted numbers, accented texts), as deliver.sh and wan.sh send them.
small_inputs() {
python3 - "$1" "$2" "$3" <<'PY'
import os, sys
files, rows, d = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for f in range(files):
    with open(os.path.join(d, "erp-%05d.csv" % f), "w", encoding="utf-8", newline="\n") as out:
        out.write("telefone;mensagem;id\n")
        for r in range(rows):
            i = f * rows + r
            out.write("(11) 9%04d-%04d;Lembrete %d do arquivo %d: sua consulta é amanhã às %dh, responda SIM;f%d-r%d\n"
                      % ((i * 7919) % 10000, i % 10000, r, f, 8 + i % 10, f, r))
PY
}

# --- shared by deliver.sh, wan.sh and duplicates.sh -------------------------------------------
group() { printf '%d' "$1" | sed -e ':a' -e 's/\([0-9]\)\([0-9]\{3\}\)\($\|,\)/\1,\2\3/' -e 'ta'; }
maxof() { printf '%s\n' "$@" | sort -g | tail -n 1; }
kib_to_mib() { calc "%.1f" "$1 / 1024"; }

# An SFTP-only sshd (internal-sftp in HOME_DIR) on a free port, retried when the port is taken.
start_sshd() {
    local attempt rc
    for attempt in 1 2 3 4 5; do
        PORT=$(free_port)
        {
            echo "Port $PORT"
            sshd_base_config
            echo "ForceCommand internal-sftp -d $HOME_DIR"
        } >"$SSH_DIR/sshd_config"
        printf '[127.0.0.1]:%s %s\n' "$PORT" "$HOST_PUB" >"$KNOWN"
        rc=0
        launch_sshd "$PORT" || rc=$?
        ((rc == 0)) && return 0
        ((rc == 2)) || break
        log "port $PORT taken; retrying ($attempt)"
    done
    sshd_failed
}

# Old remote folders are moved into $TRASH (the caller makes it; see deliver.sh), fresh ones made.
aside() { # aside PATH...: moves each existing PATH into the trash under a fresh name
    local p
    for p in "$@"; do
        [[ -e "$p" ]] && mv -- "$p" "$(mktemp -u "$TRASH/$(basename "$p").XXXXXX")"
    done
    return 0
}
clean_remote() {
    aside "$HOME_DIR/upload" "$HOME_DIR/success" "$HOME_DIR/error"
    mkdir -p "$HOME_DIR"/{upload,success,error}
    chmod 755 "$HOME_DIR"/{upload,success,error}
}

# run_timed NAME CMD... (deliver.sh, duplicates.sh): runs CMD under GNU time; sets T (wall s, EPOCHREALTIME), RSS (KiB),
# CPU (user+sys s of CMD and its children); CMD's stdout/stderr go to $WORK/NAME.out/.err.
run_timed() {
    local name=$1 rc=0 t0 t1 ut st
    shift
    t0=$(now)
    "$TIME_BIN" -f '%M %U %S' -o "$WORK/$name.time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || rc=$?
    t1=$(now)
    T=$(elapsed "$t0" "$t1")
    read -r RSS ut st < <(tail -n 1 "$WORK/$name.time")
    CPU=$(calc "%.2f" "$ut + $st")
    if [[ $rc -ne 0 ]]; then
        echo "---- $name: $* ----" >&2
        tail -n 30 "$WORK/$name.out" "$WORK/$name.err" >&2
        echo "---- sshd log (last 20 lines) ----" >&2
        tail -n 20 "$SSH_DIR/sshd.log" >&2
        die "$name exited $rc"
    fi
}
