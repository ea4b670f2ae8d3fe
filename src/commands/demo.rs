//! `smsdrop demo`: the whole flow on one machine with no credentials. It creates a workspace,
//! starts the embedded sandbox (SFTP server + gateway simulator), writes a config pointing the
//! daemon at it (host key recorded), drops the samples into the inbox, runs the daemon until every
//! job has an outcome, and prints what happened. Exit 0 only when every sample ended as
//! `samples/expected.tsv` says.

use crate::config::Config;
use crate::daemon::Engine;
use crate::journal::{JobState, Journal};
use crate::remote::sftp::SftpRemote;
use crate::sandbox::{self, SandboxOptions};
use crate::Outcome;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The samples, built in so the demo works from any folder: name, bytes, and the subaccount
/// folder of the inbox they are dropped into (`""`: the inbox itself).
const SAMPLES: [(&str, &[u8], &str); 7] = [
    (
        "protheus-cobranca.csv",
        include_bytes!("../../samples/protheus-cobranca.csv"),
        "",
    ),
    (
        "excel-utf8-bom.csv",
        include_bytes!("../../samples/excel-utf8-bom.csv"),
        "",
    ),
    (
        "lembretes-tab.txt",
        include_bytes!("../../samples/lembretes-tab.txt"),
        "",
    ),
    (
        "com-erros.csv",
        include_bytes!("../../samples/com-erros.csv"),
        "",
    ),
    (
        "campanha-virgulas.csv",
        include_bytes!("../../samples/campanha-virgulas.csv"),
        "",
    ),
    (
        "contatos.xlsx",
        include_bytes!("../../samples/contatos.xlsx"),
        "",
    ),
    // Data without a message: COBRANCA's template (below) writes the texts.
    (
        "faturas-dados.csv",
        include_bytes!("../../samples/faturas-dados.csv"),
        "COBRANCA",
    ),
];
/// The template `config/faturas-template.toml` shows, set for the COBRANCA folder.
const TEMPLATE: &str = "Olá {nome}, sua fatura de {valor} vence em {vencimento}. Código {codigo}.";
const EXPECTED: &str = include_str!("../../samples/expected.tsv");
/// Longest the demo waits for outcomes.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("workspace {path}: {source}")]
    Workspace {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
    #[error("{0}")]
    Setup(String),
}

/// Runs the demo in `dir` (default: a new folder under the system temp dir).
///
/// # Errors
/// [`DemoError`] when the workspace, the sandbox or the daemon cannot be set up.
pub fn run(dir: Option<&Path>) -> Result<Outcome, DemoError> {
    let started = Instant::now();
    let ws = match dir {
        Some(d) => d.to_owned(),
        None => tempfile::Builder::new()
            .prefix("smsdrop-demo-")
            .tempdir()
            .map_err(|source| DemoError::Workspace {
                path: std::env::temp_dir(),
                source,
            })?
            .keep(),
    };
    let io = |source| DemoError::Workspace {
        path: ws.clone(),
        source,
    };
    std::fs::create_dir_all(ws.join("inbox")).map_err(io)?;
    let password = random_password().map_err(io)?;
    let status_token = random_password().map_err(io)?;
    let token_file = ws.join("status-token");
    std::fs::write(&token_file, format!("{status_token}\n")).map_err(io)?;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    let password_file = ws.join("sandbox-password");
    std::fs::write(&password_file, format!("{password}\n")).map_err(io)?;
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).map_err(io)?;

    let sb = sandbox::start(SandboxOptions {
        listen: "127.0.0.1:0".parse().expect("a literal address"),
        root: ws.join("sandbox"),
        username: "demo".into(),
        password: Some(password),
        delay: Duration::from_millis(500),
        poll: Duration::from_millis(200),
        status: Some((
            "127.0.0.1:0".parse().expect("a literal address"),
            sandbox::statuses::StatusOptions {
                username: "demo".into(),
                token: status_token.clone(),
                delay: Duration::from_millis(500),
                fail_first: 0,
                webhook: None,
                ..sandbox::statuses::StatusOptions::default()
            },
        )),
        ..SandboxOptions::default()
    })?;
    let status_addr = sb
        .status_addr()
        .ok_or_else(|| DemoError::Setup("the sandbox's status interface did not start".into()))?;
    let addr = sb.local_addr();
    println!("smsdrop demo in {}", ws.display());
    println!(
        "  sandbox SFTP server on {addr} (host key {})",
        sb.host_key_fingerprint()
    );
    println!("  sandbox status API on http://{status_addr} (message statuses)");

    let config_path = ws.join("smsdrop.toml");
    let config = format!(
        "# Written by `smsdrop demo`: the daemon pointed at the local sandbox.\n\
         [inbox]\ndir = \"inbox\"\nstable_secs = 1\nrescan_secs = 1\n\
         [batch]\nsubaccount = \"DEMO\"\n\
         [sftp]\nhost = \"127.0.0.1\"\nport = {}\nusername = \"demo\"\npassword_file = \"sandbox-password\"\n\
         known_hosts = {:?}\ntimeout_secs = 10\n\
         [track]\npoll_secs = 1\n\
         [state]\ndir = \"state\"\n\
         [status]\nmode = \"poll\"\napi_url = \"http://{status_addr}\"\nusername = \"demo\"\n\
         token_file = \"status-token\"\npoll_secs = 1\nsearch_after = \"10s\"\n\
         [replies]\nmode = \"poll\"\npoll_secs = 1\nflush_secs = 1\noutbox = \"outbox\"\n\
         [subaccounts.COBRANCA]\ntemplate = {TEMPLATE:?}\n",
        addr.port(),
        sb.known_hosts_path()
    );
    std::fs::write(&config_path, config).map_err(io)?;
    let cfg = Config::load(&config_path).map_err(|e| DemoError::Setup(e.to_string()))?;
    for (name, bytes, folder) in SAMPLES {
        // Written under an ignored name, then renamed: the inbox never sees half a file.
        let dir = ws.join("inbox").join(folder);
        std::fs::create_dir_all(&dir).map_err(io)?;
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, dir.join(name)).map_err(io)?;
    }
    println!(
        "  copied {} samples into {}",
        SAMPLES.len(),
        ws.join("inbox").display()
    );

    let sftp = cfg
        .sftp
        .clone()
        .ok_or_else(|| DemoError::Setup("no [sftp] in the demo config".into()))?;
    let lock = crate::lock::StateLock::acquire(&cfg.state.dir)
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    let mut engine = Engine::new(cfg.clone(), Box::new(SftpRemote::new(sftp)), lock)
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    let stopper = engine.stopper();
    let _ = stopper.on_signals();
    let daemon = std::thread::spawn(move || engine.run());
    let mut finished = wait_for_outcomes(&cfg, SAMPLES.len(), &stopper);
    // The customers answer; some opt out. A second campaign then meets those numbers.
    let second = finished
        .then(|| second_campaign(&cfg, &ws))
        .transpose()
        .map_err(io)?
        .flatten();
    if second.is_some() {
        finished = wait_for_outcomes(&cfg, SAMPLES.len() + 1, &stopper);
    }
    stopper.stop();
    let ran = daemon
        .join()
        .map_err(|_| DemoError::Setup("the daemon thread panicked".into()))?;
    ran.map_err(|e| DemoError::Setup(e.to_string()))?;
    sb.stop();
    if !finished {
        println!(
            "  not every job had an outcome after {}s",
            TIMEOUT.as_secs()
        );
    }
    let jobs = SAMPLES.len() + usize::from(second.is_some());
    let ok = print_table(&cfg, jobs).map_err(|e| DemoError::Setup(e.to_string()))? && finished;
    print_replies(&cfg, second.as_ref());
    println!("\n  reports:  {}", cfg.report.dir.display());
    println!(
        "  gateway:  {} (the simulator's decisions)",
        ws.join("sandbox/gateway.log").display()
    );
    println!(
        "  messages: {} (per-message statuses sent); *.delivery.csv in the reports",
        ws.join("sandbox")
            .join(sandbox::statuses::DECISIONS)
            .display()
    );
    println!(
        "  config:   {} (try `smsdrop --config {} status`)",
        config_path.display(),
        config_path.display()
    );
    println!(
        "  took {:.1}s; {}",
        started.elapsed().as_secs_f64(),
        if ok {
            "every sample ended as expected"
        } else {
            "SOME SAMPLES DID NOT END AS EXPECTED"
        }
    );
    Ok(if ok { Outcome::Ok } else { Outcome::Failure })
}

/// The second export: every number of DEMO's opt-out list and one that never answered.
const SECOND: &str = "segunda-campanha.csv";
/// The number in the second export that is not on the list.
const FRESH: &str = "5511987650001";

/// Waits (at most 20 s) until every reply the simulator decided is in the outbox, then drops
/// the second export into the inbox; returns the opted-out numbers it holds (`None` when no
/// customer opted out, so nothing is dropped).
fn second_campaign(cfg: &Config, ws: &Path) -> std::io::Result<Option<Vec<String>>> {
    let decided = || {
        std::fs::read_to_string(ws.join("sandbox").join(sandbox::replies::LOG))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(j)) = Journal::open_read_only(&cfg.state.dir) {
            if decided() > 0
                && outbox_replies(cfg) >= decided()
                && j.replies_waiting().ok() == Some(0)
            {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let numbers: Vec<String> = match Journal::open_read_only(&cfg.state.dir) {
        Ok(Some(j)) => j
            .optouts(Some("DEMO"))
            .map_err(std::io::Error::other)?
            .into_iter()
            .map(|o| o.number)
            .collect(),
        _ => vec![],
    };
    if numbers.is_empty() {
        return Ok(None);
    }
    let mut csv = String::from("celular;mensagem\n");
    for n in numbers.iter().map(String::as_str).chain([FRESH]) {
        csv.push_str(&format!("{n};Nova campanha: 10% de desconto ate sexta\n"));
    }
    let tmp = cfg.inbox.dir.join(format!(".{SECOND}.tmp"));
    std::fs::write(&tmp, csv)?;
    std::fs::rename(&tmp, cfg.inbox.dir.join(SECOND))?;
    Ok(Some(numbers))
}

/// Replies in the outbox's files.
fn outbox_replies(cfg: &Config) -> usize {
    std::fs::read_dir(&cfg.replies.outbox)
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .map(|t| t.lines().count().saturating_sub(1))
                .sum()
        })
        .unwrap_or(0)
}

/// The replies the ERP gets, and what the second campaign did with the opted-out numbers.
fn print_replies(cfg: &Config, second: Option<&Vec<String>>) {
    let mut out = std::io::stdout().lock();
    let files: Vec<PathBuf> = std::fs::read_dir(&cfg.replies.outbox)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "\n  replies:  {} in {} ({} file(s) for the ERP)",
        outbox_replies(cfg),
        cfg.replies.outbox.display(),
        files.len()
    );
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for l in text.lines().skip(1) {
            let c: Vec<&str> = l.split(';').collect();
            if c.len() == 12 {
                let _ = writeln!(
                    out,
                    "    {:<15} {:<24} job {:<3} line {:<3} {}",
                    crate::ops::page::mask(c[1]),
                    format!("{:?}", c[2]),
                    c[5],
                    c[7],
                    if c[11] == "yes" { "OPTED OUT" } else { "" }
                );
            }
        }
    }
    if let Some(numbers) = second {
        let _ = writeln!(
            out,
            "  {SECOND}: {} number(s) on the opt-out list (replies and the gateway's status 204) \
             and one other: only the other was sent; the result CSV says `opted_out` for the rest",
            numbers.len()
        );
    }
}

fn random_password() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Polls the journal until `count` jobs are final and reported, or the time runs out.
fn wait_for_outcomes(cfg: &Config, count: usize, stopper: &crate::daemon::Stopper) -> bool {
    let start = Instant::now();
    let _ = stopper;
    while start.elapsed() < TIMEOUT {
        if let Ok(Some(j)) = Journal::open_read_only(&cfg.state.dir) {
            if let Ok(jobs) = j.recent_jobs(count as u32 + 10) {
                let tracked = |id| j.tracking(id).is_ok_and(|t| t.as_deref() == Some("done"));
                if jobs.len() >= count
                    && jobs.iter().all(|job| {
                        job.state.is_final()
                            && job.reported
                            && (job.state == JobState::Rejected || tracked(job.id))
                    })
                {
                    return true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Prints one line per job and checks each against the samples' expectations.
fn print_table(cfg: &Config, expected_jobs: usize) -> Result<bool, crate::journal::JournalError> {
    let Some(journal) = Journal::open_read_only(&cfg.state.dir)? else {
        return Ok(false);
    };
    let mut jobs = journal.recent_jobs(100)?;
    jobs.reverse();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\n  {:<24} {:>5} {:>9} {:<28} {:<10} {:>9} {:>6} {:>7} CHECK",
        "INPUT", "ROWS", "REJECTED", "REMOTE FILES", "OUTCOME", "DELIVERED", "FAILED", "PENDING"
    );
    let mut ok = true;
    let mut seen = 0;
    for job in &jobs {
        let names: Vec<String> = journal
            .batches(job.id)?
            .into_iter()
            .map(|b| b.name)
            .collect();
        let expected = EXPECTED
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split('\t').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&job.input_name.as_str()));
        let good = expected.is_some_and(|f| {
            f.get(1) == Some(&job.state.as_str())
                && f.get(2).and_then(|n| n.parse().ok()) == Some(job.rows_sent)
                && f.get(3).and_then(|n| n.parse().ok()) == Some(job.rows_rejected)
        });
        let counts = journal.message_counts(job.id)?.unwrap_or_default();
        // Every message must carry the simulator's decision for its number.
        let mismatched = journal
            .messages(job.id)?
            .iter()
            .filter(|m| m.untracked.is_none())
            .filter(|m| {
                let d = sandbox::statuses::decide(&m.number);
                m.sent_code != Some(d.sent) || m.delivered_code != d.delivered
            })
            .count();
        let good = good && mismatched == 0 && counts.pending == 0;
        seen += usize::from(good);
        ok &= good;
        let _ = writeln!(
            out,
            "  {:<24} {:>5} {:>9} {:<28} {:<10} {:>9} {:>6} {:>7} {}",
            job.input_name,
            job.rows_read,
            job.rows_rejected,
            names.join(","),
            job.state.as_str(),
            counts.delivered,
            counts.failed,
            counts.pending,
            if good { "as expected" } else { "UNEXPECTED" }
        );
        if mismatched > 0 {
            let _ = writeln!(
                out,
                "      {mismatched} messages differ from the simulator's decisions"
            );
        }
        if job.state != JobState::Succeeded {
            if let Some(r) = &job.reason {
                let _ = writeln!(out, "      reason: {r}");
            }
        }
    }
    Ok(ok && seen == expected_jobs)
}
