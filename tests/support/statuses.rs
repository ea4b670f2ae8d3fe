//! The gateway's HTTP status interface for tests: smsdrop's simulator
//! (`smsdrop::sandbox::statuses`) served on loopback, fed with every file the test gateway moves
//! to `success/` on the real sshd (a watcher thread reads each new file once). Replies are on by
//! default; [`StatusSim::start_with`] takes any [`StatusOptions`] ([`options`] gives this file's
//! credentials), and [`StatusSim::replies`] reads the simulator's `replies.log`.

use smsdrop::sandbox::statuses::{Service, StatusOptions};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

pub const USER: &str = "acme";
pub const TOKEN: &str = "test-token-123";
pub const WEBHOOK_TOKEN: &str = "hook-secret-456";

/// A running status interface.
pub struct StatusSim {
    pub service: Service,
    pub root: PathBuf,
    stop: Arc<AtomicBool>,
    feeder: Option<JoinHandle<()>>,
}

impl StatusSim {
    /// Serves statuses for what lands in `<home>/success`, logging under `root`.
    pub fn start(
        home: &Path,
        root: &Path,
        delay: Duration,
        fail_first: u32,
        webhook: Option<String>,
    ) -> StatusSim {
        StatusSim::start_with(
            home,
            root,
            StatusOptions {
                fail_first,
                webhook,
                ..options(delay)
            },
        )
    }

    /// Serves what lands in `<home>/success` as `opts` say, logging under `root`.
    pub fn start_with(home: &Path, root: &Path, opts: StatusOptions) -> StatusSim {
        std::fs::create_dir_all(root).unwrap();
        let service = Service::start("127.0.0.1:0".parse().unwrap(), &opts, root)
            .expect("the status simulator must start");
        let book = service.book();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, success) = (stop.clone(), home.join("success"));
        let feeder = std::thread::spawn(move || {
            let mut seen = HashSet::new();
            while !s.load(Ordering::SeqCst) {
                if let Ok(rd) = std::fs::read_dir(&success) {
                    for e in rd.flatten() {
                        let name = e.file_name();
                        if seen.contains(&name) {
                            continue;
                        }
                        if let Ok(bytes) = std::fs::read(e.path()) {
                            let file = name.to_string_lossy().into_owned();
                            seen.insert(name);
                            book.lock()
                                .unwrap()
                                .add_file(&file, &bytes, SystemTime::now());
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        StatusSim {
            service,
            root: root.to_owned(),
            stop,
            feeder: Some(feeder),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.service.addr())
    }

    /// The `[status]` lines pointing smsdrop at this interface.
    pub fn config(&self, mode: &str, extra: &str) -> String {
        format!(
            "[status]\nmode = {mode:?}\napi_url = {:?}\nusername = {USER:?}\ntoken_env = \"SMSDROP_TEST_STATUS_TOKEN\"\n{extra}\n",
            self.url()
        )
    }

    /// `(correlation id, number, sent status, delivered status, carrier)` per decided message.
    pub fn decisions(&self) -> Vec<[String; 5]> {
        let text = std::fs::read_to_string(self.root.join("statuses.log")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                std::array::from_fn(|i| f.get(i).unwrap_or(&"").to_string())
            })
            .collect()
    }

    /// `(id, number, correlation id, text, receivedAt epoch ms)` per reply the simulator holds,
    /// decided or injected, in the order it took them.
    pub fn replies(&self) -> Vec<[String; 5]> {
        let text = std::fs::read_to_string(self.root.join("replies.log")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                std::array::from_fn(|i| f.get(i).unwrap_or(&"").to_string())
            })
            .collect()
    }

    /// `(epoch ms, request, HTTP status)` per request received.
    pub fn requests(&self) -> Vec<(i64, String, u16)> {
        let text =
            std::fs::read_to_string(self.root.join("status-requests.log")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (
                    f[0].parse().unwrap(),
                    f[1].to_owned(),
                    f[2].parse().unwrap(),
                )
            })
            .collect()
    }
}

impl Drop for StatusSim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(f) = self.feeder.take() {
            let _ = f.join();
        }
    }
}

/// This file's credentials, statuses after `delay`, replies on (a reply `delay` after its
/// first status), no pushes: set other fields with `..options(delay)`.
pub fn options(delay: Duration) -> StatusOptions {
    StatusOptions {
        username: USER.into(),
        token: TOKEN.into(),
        delay,
        ..StatusOptions::default()
    }
}

/// Rows of a `.delivery.csv`, header checked.
pub fn delivery_rows(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(
            "line;number;correlation_id;sent_status;sent_at;delivered_status;delivered_at;carrier"
        )
    );
    lines
        .map(|l| l.split(';').map(str::to_owned).collect())
        .collect()
}
