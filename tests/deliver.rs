//! Delivery end to end: the built binary against a real OpenSSH sshd and the gateway simulator.
//! Each test fails (never skips) when sshd cannot start.

mod support;

use std::path::Path;
use std::time::Duration;
use support::gateway::Gateway;
use support::setup::{big_input, has_temp, sample, show, stop, wait_for, walk, Login, Setup};
use support::sshd::SftpAuth;

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn send_delivers_the_samples_with_key_auth() {
    let s = Setup::new(Login::Key);
    let samples = [
        "protheus-cobranca.csv",
        "excel-utf8-bom.csv",
        "lembretes-tab.txt",
        "com-erros.csv",
    ]
    .map(sample);
    let mut args = vec!["send"];
    args.extend(samples.iter().map(String::as_str));
    let out = s.run(&args);
    // com-erros.csv holds rejected rows: exit 3, while every file was delivered.
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let success = s.remote("success");
    assert_eq!(success.len(), 4, "{success:?}\n{}", show(&out));
    assert!(s.remote("upload").is_empty() && s.remote("error").is_empty());
    let today = s.today();
    for seq in 1..=4 {
        assert!(
            success.contains(&format!("ACME.{today}.{seq:02}.txt")),
            "{success:?}"
        );
    }
    // 4 + 4 + 3 + 4 rows (com-erros.csv's line 12 rebuilt from an unquoted `;`), each once.
    assert_eq!(s.gateway.total_messages(), 15);
    assert!(
        s.gateway.messages().values().all(|&n| n == 1),
        "{:?}",
        s.gateway.messages()
    );
    let st = s.status();
    let jobs = st["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 4);
    for j in jobs {
        assert_eq!(j["state"], "succeeded", "{j:#}");
        for key in [
            "input",
            "subaccount",
            "rows",
            "rows_rejected",
            "reason",
            "remote_files",
            "created_at",
            "updated_at",
        ] {
            assert!(j.get(key).is_some(), "status JSON lacks {key}: {j:#}");
        }
        assert_eq!(j["remote_files"][0]["state"], "succeeded");
    }
    // Reports: JSON and the ERP's result CSV.
    let reports: Vec<String> = std::fs::read_dir(s.path("state/reports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        reports.iter().filter(|n| n.ends_with(".json")).count(),
        4,
        "{reports:?}"
    );
    let csv_name = reports
        .iter()
        .find(|n| n.ends_with("com-erros.csv.result.csv"))
        .expect("result csv");
    let csv = std::fs::read_to_string(s.path("state/reports").join(csv_name)).unwrap();
    assert!(
        csv.starts_with("line;number;correlation_id;status;reason;remote_file\n"),
        "{csv}"
    );
    assert!(
        csv.contains(&format!("\n2;5511987654321;P1;succeeded;;ACME.{today}.")),
        "{csv}"
    );
    assert!(
        csv.contains(
            "\n3;5.51199E+12;P2;rejected;\"number \"\"5.51199E+12\"\" is in scientific notation"
        ),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 1 + 11, "{csv}");
    // The named files stay; copies are archived.
    assert!(Path::new(&samples[0]).exists());
    assert_eq!(
        std::fs::read_dir(s.path("state/archive")).unwrap().count(),
        4
    );
}

#[test]
#[cfg_attr(
    not(sshd_as_root),
    ignore = "needs OpenSSH sshd and root (password login, mounts); CI runs as root"
)]
fn password_auth_works_and_the_password_is_never_written() {
    let s = Setup::new(Login::Password);
    let password = s
        .sshd
        .password()
        .expect("password auth needs root")
        .to_string();
    let out = s
        .command(&["send", &sample("lembretes-tab.txt")])
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(s.remote("success").len(), 1);
    let status = s.run(&["status", "--json"]);
    let mut haystack = vec![out.stdout, out.stderr, status.stdout];
    for entry in walk(s.work.path()) {
        haystack.push(std::fs::read(entry).unwrap_or_default());
    }
    for blob in &haystack {
        assert!(
            !String::from_utf8_lossy(blob).contains(&password),
            "the password leaked"
        );
        assert!(!blob
            .windows(password.len())
            .any(|w| w == password.as_bytes()));
    }
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn a_wrong_host_key_is_refused_with_its_fingerprint() {
    let s = Setup::new(Login::Key);
    let cfg = std::fs::read_to_string(s.path("smsdrop.toml")).unwrap();
    let wrong = cfg.replace(
        &format!("{:?}", s.sshd.known_hosts_path()),
        &format!("{:?}", s.sshd.wrong_known_hosts_path()),
    );
    std::fs::write(s.path("smsdrop.toml"), wrong).unwrap();
    let out = s.run(&["send", &sample("lembretes-tab.txt")]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(s.sshd.host_key_fingerprint()), "{err}");
    assert!(s.remote("upload").is_empty() && s.remote("success").is_empty());
    let check = s.run(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", show(&check));
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("FAIL  host key"),
        "{}",
        show(&check)
    );
}

/// Points the config at a known_hosts file holding `text`, and returns its path.
fn use_known_hosts(s: &Setup, text: &str) -> std::path::PathBuf {
    let path = s.path("known_hosts_revoked");
    std::fs::write(&path, text).unwrap();
    let cfg = std::fs::read_to_string(s.path("smsdrop.toml")).unwrap();
    std::fs::write(
        s.path("smsdrop.toml"),
        cfg.replace(
            &format!("{:?}", s.sshd.known_hosts_path()),
            &format!("{path:?}"),
        ),
    )
    .unwrap();
    path
}

/// The refusal of a revoked key: REVOKED, its fingerprint, the file and line, whom to ask, and
/// never the way to accept a new key.
fn assert_revoked(s: &Setup, text: &str, known_hosts: &Path, line: usize) {
    assert!(text.contains("REVOKED"), "{text}");
    assert!(text.contains(s.sshd.host_key_fingerprint()), "{text}");
    assert!(
        text.contains(&format!("{} line {line}", known_hosts.display())),
        "{text}"
    );
    assert!(text.contains("gateway's support"), "{text}");
    assert!(!text.contains("accept-new-host-key"), "{text}");
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn a_revoked_host_key_is_refused_even_beside_a_matching_line() {
    let s = Setup::new(Login::Key);
    let trusted = std::fs::read_to_string(s.sshd.known_hosts_path()).unwrap();
    let text = format!(
        "# the gateway's key leaked in March\n@revoked * {} leaked\n{trusted}",
        s.sshd.host_public_key()
    );
    let kh = use_known_hosts(&s, &text);
    // OpenSSH itself refuses this file: the semantics we follow.
    let openssh = s.sshd.sftp_as(
        SftpAuth::Key(&s.sshd.private_key_path()),
        &kh,
        "ls upload\n",
    );
    assert!(!openssh.status.success());
    assert!(
        String::from_utf8_lossy(&openssh.stderr).contains("REVOKED HOST KEY"),
        "{}",
        String::from_utf8_lossy(&openssh.stderr)
    );

    let out = s.run(&["send", &sample("lembretes-tab.txt")]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_revoked(&s, &String::from_utf8_lossy(&out.stderr), &kh, 2);
    assert!(s.remote("upload").is_empty() && s.remote("success").is_empty());
    assert!(s.gateway.processed().is_empty());

    let check = s.run(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", show(&check));
    let stdout = String::from_utf8_lossy(&check.stdout);
    let host_key = stdout
        .lines()
        .find(|l| l.contains("host key"))
        .unwrap_or_else(|| panic!("no host key line: {}", show(&check)));
    assert!(host_key.starts_with("FAIL  host key: "), "{host_key}");
    assert_revoked(&s, host_key, &kh, 2);
    assert!(!stdout.contains("ok    login"), "{}", show(&check));
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), text);
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn a_revoked_host_key_is_never_recorded() {
    let s = Setup::new(Login::Key);
    let text = format!(
        "@revoked [127.0.0.1]:{} {}\n",
        s.sshd.port(),
        s.sshd.host_public_key()
    );
    let kh = use_known_hosts(&s, &text);

    let out = s.run(&["send", &sample("lembretes-tab.txt")]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_revoked(&s, &String::from_utf8_lossy(&out.stderr), &kh, 1);
    assert!(s.remote("upload").is_empty() && s.remote("success").is_empty());

    for args in [&["check"][..], &["check", "--accept-new-host-key"]] {
        let check = s.run(args);
        assert_eq!(check.status.code(), Some(1), "{args:?}: {}", show(&check));
        let stdout = String::from_utf8_lossy(&check.stdout);
        let host_key = stdout
            .lines()
            .find(|l| l.contains("host key"))
            .unwrap_or_else(|| panic!("{args:?}: no host key line: {}", show(&check)));
        assert!(host_key.starts_with("FAIL  host key: "), "{host_key}");
        assert_revoked(&s, host_key, &kh, 1);
        assert_eq!(
            std::fs::read_to_string(&kh).unwrap(),
            text,
            "{args:?} must never record a revoked key"
        );
    }
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn unknown_host_key_is_accepted_only_when_asked() {
    let s = Setup::new(Login::Key);
    let cfg = std::fs::read_to_string(s.path("smsdrop.toml")).unwrap();
    let fresh = s.path("state/known_hosts_new");
    std::fs::write(
        s.path("smsdrop.toml"),
        cfg.replace(
            &format!("{:?}", s.sshd.known_hosts_path()),
            &format!("{fresh:?}"),
        ),
    )
    .unwrap();
    let out = s.run(&["send", &sample("lembretes-tab.txt")]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("accept-new-host-key"),
        "{}",
        show(&out)
    );
    let check = s.run(&["check", "--accept-new-host-key"]);
    assert_eq!(check.status.code(), Some(0), "{}", show(&check));
    let text = String::from_utf8_lossy(&check.stdout);
    for want in [
        "ok    host key",
        "ok    login",
        "ok    remote folder: upload/",
        "ok    remote folder: error/",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    // The retried job resumes and goes through.
    let out = s.run(&["send", &sample("excel-utf8-bom.csv")]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        s.remote("success").len(),
        2,
        "the first file's job was resumed too"
    );
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn daemon_takes_inbox_files_rejects_duplicates_and_stops_on_sigterm() {
    let s = Setup::new(Login::Key);
    let daemon = s.daemon();
    std::fs::create_dir_all(s.path("inbox/OTHER_1")).unwrap();
    s.drop_sample("protheus-cobranca.csv", "a.csv");
    s.drop_sample("lembretes-tab.txt", "OTHER_1/b.txt");
    s.wait_final(2, Duration::from_secs(30));
    // The same content again: rejected as a duplicate, nothing sent twice.
    s.drop_sample("protheus-cobranca.csv", "a-again.csv");
    let st = s.wait_final(3, Duration::from_secs(30));
    let status = stop(daemon);
    assert!(status.success(), "daemon exit {status:?}\n{}", s.log());
    let jobs = st["jobs"].as_array().unwrap();
    let dup = jobs
        .iter()
        .find(|j| j["input"].as_str().unwrap().ends_with("a-again.csv"))
        .unwrap();
    assert_eq!(dup["state"], "rejected");
    assert!(
        dup["reason"].as_str().unwrap().contains("duplicate"),
        "{dup:#}"
    );
    let success = s.remote("success");
    let today = s.today();
    assert!(
        success.contains(&format!("ACME.{today}.01.txt")),
        "{success:?}"
    );
    assert!(
        success.contains(&format!("OTHER_1.{today}.01.txt")),
        "{success:?}"
    );
    assert_eq!(success.len(), 2);
    assert_eq!(
        std::fs::read_dir(s.path("inbox")).unwrap().count(),
        1,
        "only the OTHER_1 folder stays"
    );
    assert_eq!(
        std::fs::read_dir(s.path("state/rejected")).unwrap().count(),
        1
    );
    assert_eq!(
        std::fs::read_dir(s.path("state/archive")).unwrap().count(),
        2
    );
    assert!(s.log().contains("input taken"), "{}", s.log());
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn sequence_numbers_start_above_names_already_on_the_server() {
    let s = Setup::new(Login::Key);
    let today = s.today();
    let theirs = s.sshd.home().join(format!("error/ACME.{today}.07.txt"));
    std::fs::write(&theirs, "not ours").unwrap();
    let out = s.run(&["send", &sample("lembretes-tab.txt")]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(s.remote("success"), vec![format!("ACME.{today}.08.txt")]);
    assert_eq!(std::fs::read_to_string(theirs).unwrap(), "not ours");
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn server_going_away_mid_upload_then_back_delivers_exactly_once() {
    let mut s = Setup::new(Login::Key);
    let rows = 400_000;
    big_input(&s.path("big.csv"), rows);
    let daemon = s.daemon();
    std::fs::rename(s.path("big.csv"), s.path("inbox/big.csv")).unwrap();
    wait_for("the upload to start", Duration::from_secs(60), || {
        has_temp(&s)
    });
    s.sshd.stop();
    std::thread::sleep(Duration::from_secs(2));
    s.sshd.restart().expect("sshd restarts");
    let st = s.wait_final(1, Duration::from_secs(120));
    assert!(stop(daemon).success());
    assert_eq!(st["jobs"][0]["state"], "succeeded", "{st:#}\n{}", s.log());
    let success = s.remote("success");
    assert_eq!(success.len(), 1 + rows / 50_000 - 1, "{success:?}");
    assert_eq!(s.gateway.total_messages(), rows);
    assert!(
        s.gateway.messages().values().all(|&n| n == 1),
        "a message went twice"
    );
    assert!(
        s.remote("upload").is_empty(),
        "temp files left: {:?}",
        s.remote("upload")
    );
    assert!(
        s.log().contains("server unavailable") || s.log().contains("upload failed"),
        "{}",
        s.log()
    );
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn kill_9_mid_upload_then_restart_delivers_exactly_once() {
    let s = Setup::new(Login::Key);
    let rows = 400_000;
    big_input(&s.path("big.csv"), rows);
    let mut daemon = s.daemon();
    std::fs::rename(s.path("big.csv"), s.path("inbox/big.csv")).unwrap();
    wait_for("the upload to start", Duration::from_secs(60), || {
        has_temp(&s)
    });
    daemon.kill9();
    let daemon = s.daemon();
    let st = s.wait_final(1, Duration::from_secs(120));
    assert!(stop(daemon).success());
    assert_eq!(st["jobs"][0]["state"], "succeeded", "{st:#}");
    assert_eq!(s.remote("success").len(), rows / 50_000);
    assert_eq!(s.gateway.total_messages(), rows);
    assert!(
        s.gateway.messages().values().all(|&n| n == 1),
        "a message went twice"
    );
    assert!(
        s.remote("upload").is_empty(),
        "temp files left: {:?}",
        s.remote("upload")
    );
    let dupes: Vec<_> = s
        .gateway
        .processed()
        .into_iter()
        .filter(|p| p.2.contains("duplicate"))
        .collect();
    assert!(dupes.is_empty(), "{dupes:?}");
}

#[test]
#[cfg_attr(
    not(sshd_as_root),
    ignore = "needs OpenSSH sshd and root (password login, mounts); CI runs as root"
)]
fn gateway_errors_fail_the_job_and_the_hook_hears_every_outcome() {
    let mut s = Setup::with(Login::Password, "[report]\non_outcome = [\"sh\", \"-c\", \"echo $SMSDROP_JOB_ID $SMSDROP_OUTCOME $SMSDROP_INPUT >> hook.log; test -f \\\"$SMSDROP_REPORT\\\" && test -f \\\"$SMSDROP_RESULT_CSV\\\" && env | grep -c SMSDROP_TEST_PASSWORD >> hook.log || true\"]\nlog_format = \"json\"\n");
    s.gateway.stop();
    s.gateway = Gateway::builder(s.sshd.home())
        .poll_interval(Duration::from_millis(100))
        .fail_every(2)
        .start();
    let out = s.run(&[
        "send",
        &sample("protheus-cobranca.csv"),
        &sample("lembretes-tab.txt"),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let st = s.status();
    let states: Vec<&str> = st["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states.iter().filter(|&&x| x == "failed").count(),
        1,
        "{st:#}"
    );
    assert_eq!(
        states.iter().filter(|&&x| x == "succeeded").count(),
        1,
        "{st:#}"
    );
    let failed = st["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["state"] == "failed")
        .unwrap();
    assert!(
        failed["reason"].as_str().unwrap().contains("error/"),
        "{failed:#}"
    );
    let hook = std::fs::read_to_string(s.path("hook.log")).expect("the hook ran");
    let lines: Vec<&str> = hook.lines().collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains(" failed ") || l.contains(" succeeded "))
            .count(),
        2,
        "{hook}"
    );
    assert!(
        lines
            .iter()
            .all(|l| !l.contains("SMSDROP_TEST_PASSWORD") && *l != "1"),
        "{hook}"
    );
    // JSON logs, one object a line.
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("json log lines");
    let v: serde_json::Value = serde_json::from_str(first).expect("a JSON log line");
    assert!(v.get("level").is_some(), "{first}");
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn no_outcome_in_time_expires_the_job() {
    let mut s = Setup::with(Login::Key, "");
    s.edit_config("poll_secs = 1", "poll_secs = 1\ngive_up_after = \"2s\"");
    s.gateway.stop();
    let out = s.run(&["send", &sample("lembretes-tab.txt")]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let st = s.status();
    assert_eq!(st["jobs"][0]["state"], "expired", "{st:#}");
    assert!(
        st["jobs"][0]["reason"].as_str().unwrap().contains("2s"),
        "{st:#}"
    );
    assert_eq!(
        s.remote("upload").len(),
        1,
        "the file stays where the gateway can still take it"
    );
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn done_markers_hold_files_back_and_are_archived_with_them() {
    let s = Setup::with(Login::Key, "");
    let cfg = std::fs::read_to_string(s.path("smsdrop.toml")).unwrap();
    std::fs::write(
        s.path("smsdrop.toml"),
        cfg.replace(
            "rescan_secs = 1",
            "rescan_secs = 1\ndone_marker = \".done\"",
        ),
    )
    .unwrap();
    let daemon = s.daemon();
    s.drop_sample("lembretes-tab.txt", "a.txt");
    // The evidence that a scan looked at a.txt: b.csv, dropped after it with its marker, is
    // taken by a scan that listed a.txt too.
    s.drop_sample("excel-utf8-bom.csv", "b.csv");
    std::fs::write(s.path("inbox/b.csv.done"), "").unwrap();
    let st = s.wait_final(1, Duration::from_secs(30));
    assert_eq!(st["jobs"].as_array().unwrap().len(), 1, "{st:#}");
    assert!(s.path("inbox/a.txt").exists(), "taken without its marker");
    std::fs::write(s.path("inbox/a.txt.done"), "").unwrap();
    let st = s.wait_final(2, Duration::from_secs(30));
    assert!(stop(daemon).success());
    for j in st["jobs"].as_array().unwrap() {
        assert_eq!(j["state"], "succeeded", "{st:#}");
    }
    let mut archived: Vec<String> = std::fs::read_dir(s.path("state/archive"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    archived.sort();
    assert_eq!(
        archived,
        vec!["1-b.csv", "1-b.csv.done", "2-a.txt", "2-a.txt.done"]
    );
}

#[test]
#[cfg_attr(
    not(sshd_as_root),
    ignore = "needs OpenSSH sshd and root (password login, mounts); CI runs as root"
)]
fn a_password_file_others_can_read_is_warned_about_or_refused() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new(Login::Password);
    let password = s.sshd.password().expect("root").to_string();
    let file = s.path("sftp-password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = std::fs::read_to_string(s.path("smsdrop.toml")).unwrap();
    let cfg = cfg.replace(
        "password_env = \"SMSDROP_TEST_PASSWORD\"",
        "password_file = \"sftp-password\"",
    );
    std::fs::write(s.path("smsdrop.toml"), &cfg).unwrap();
    let out = s.run(&["send", &sample("lembretes-tab.txt")]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("readable by group or others") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(!err.contains(&password));
    std::fs::write(
        s.path("smsdrop.toml"),
        cfg.replace(
            "timeout_secs = 5",
            "timeout_secs = 5\nstrict_permissions = true",
        ),
    )
    .unwrap();
    let out = s.run(&["send", &sample("excel-utf8-bom.csv")]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("strict_permissions"),
        "{}",
        show(&out)
    );
}
