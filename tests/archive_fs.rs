//! The archive on another file system (a tmpfs, as with a separate archive disk): inputs are
//! moved there by copy, sync, then removal of the original; nothing is lost or left half-copied.

mod support;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;
use support::setup::{show, stop, Login, Setup};

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn an_archive_on_another_file_system_gets_complete_copies_before_the_originals_go() {
    let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (a tmpfs) is needed");
    let s = Setup::with(
        Login::Key,
        &format!("archive_dir = {:?}\n", shm.path().join("archive")),
    );
    // The watch for late writes keeps a claimed input beside the inbox for this long before
    // it moves to an archive on another file system (where a writer's handle cannot follow).
    s.inbox_setting("late_write_secs = 1");
    std::fs::create_dir_all(s.path("inbox")).unwrap();
    assert_ne!(
        std::fs::metadata(s.path("inbox")).unwrap().dev(),
        std::fs::metadata(shm.path()).unwrap().dev(),
        "the test needs the archive on another file system than the inbox"
    );
    let mut originals = vec![];
    for i in 0..3 {
        let mut text = String::from("celular;mensagem;id\n");
        for r in 0..500 {
            text.push_str(&format!(
                "5511977{i:02}{r:04};Lembrete {i}/{r} de fatura;x{i}-{r}\n"
            ));
        }
        originals.push((format!("f{i}.csv"), text.clone()));
        s.drop_in(&format!("f{i}.csv"), text);
    }
    let daemon = s.daemon();
    s.wait_final(3, Duration::from_secs(60));
    support::setup::wait_for("the archive moves", Duration::from_secs(30), || {
        std::fs::read_dir(shm.path().join("archive")).map_or(0, |d| d.count()) == 3
    });
    assert!(stop(daemon).success(), "{}", s.log());
    // A named file is copied there too, and left in place.
    let named = s.path("named.csv");
    std::fs::write(&named, "celular;mensagem;id\n5511966660000;Outro;n-1\n").unwrap();
    let out = s.run(&["send", named.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(named.exists());

    let archived: Vec<_> = std::fs::read_dir(shm.path().join("archive"))
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    let names: Vec<String> = archived
        .iter()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(archived.len(), 4, "no temporary copy left: {names:?}");
    for (name, text) in &originals {
        let stored = archived
            .iter()
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .ends_with(&format!("-{name}"))
            })
            .unwrap_or_else(|| panic!("{name} archived: {names:?}"));
        assert_eq!(&std::fs::read_to_string(stored.path()).unwrap(), text);
    }
    let left: Vec<_> = support::setup::walk(&s.path("inbox"));
    assert!(
        left.is_empty(),
        "nothing left in the inbox or its claim folder: {left:?}"
    );
    assert_eq!(s.gateway.total_messages(), 1501);
    assert!(s.gateway.messages().values().all(|&n| n == 1));
}
