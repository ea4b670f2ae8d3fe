//! `smsdrop optout` driven as an operator would: the built binary on a state folder, no server.

mod util;

use util::{show, Dir};

const CONFIG: &str = "[batch]\nsubaccount = \"ACME\"\ntimezone = \"America/Sao_Paulo\"\n\
                      [state]\ndir = \"state\"\n";

fn optout(dir: &Dir, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--config", "smsdrop.toml", "optout"];
    all.extend_from_slice(args);
    dir.run(&all)
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The numbers on ACME's list, from `list --json`.
fn listed(dir: &Dir) -> Vec<(String, String)> {
    let out = optout(dir, &["list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["number"].as_str().unwrap().to_owned(),
                o["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn add_list_remove_export_and_import_round_trip() {
    let dir = Dir::new();
    dir.write("smsdrop.toml", CONFIG);

    // Numbers as people write them, normalised as rows are; all or nothing.
    let out = optout(&dir, &["add", "11987654321", "(21) 99876-5432"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).starts_with("2 of 2 numbers added to ACME's"),
        "{}",
        show(&out)
    );
    let out = optout(&dir, &["add", "11911112222", "12x"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"12x\" is not a phone number"));
    let both = vec![
        ("5511987654321".to_owned(), "operator".to_owned()),
        ("5521998765432".to_owned(), "operator".to_owned()),
    ];
    assert_eq!(listed(&dir), both, "nothing recorded from the refused add");
    let table = stdout(&optout(&dir, &["list"]));
    assert!(table.contains("ACME        5521998765432"), "{table}");
    assert!(
        table.ends_with("2 numbers on ACME's opt-out list\n"),
        "{table}"
    );

    // Export, empty the list, import what export wrote: the same numbers again.
    let out = optout(&dir, &["export", "--out", "list.csv"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let csv = std::fs::read_to_string(dir.path().join("list.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "subaccount;number;since;source;detail");
    assert!(lines[1].starts_with("ACME;5511987654321;20"), "{csv}");
    assert!(lines[1].ends_with(";operator;"), "{csv}");
    assert_eq!(lines.len(), 3, "{csv}");
    assert_eq!(
        stdout(&optout(&dir, &["export"])),
        csv,
        "stdout and --out agree"
    );
    let out = optout(
        &dir,
        &["remove", "5511987654321", "021998765432", "11900000000"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).starts_with("2 of 3 numbers taken off ACME's"),
        "{}",
        show(&out)
    );
    assert!(listed(&dir).is_empty());
    let out = optout(&dir, &["import", "list.csv"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).contains("ACME: 2 numbers added from list.csv"),
        "{}",
        show(&out)
    );
    let imported: Vec<(String, String)> = both
        .iter()
        .map(|(n, _)| (n.clone(), "import".to_owned()))
        .collect();
    assert_eq!(listed(&dir), imported);

    // A portal's export with a bad line: the rest imported, the bad line named.
    dir.write(
        "portal.csv",
        "Telefone,Nome\n\"(11) 3333-4444\",Loja\nsem telefone,Ana\n+55 31 98888-7777,Bia\n",
    );
    let out = optout(&dir, &["import", "portal.csv"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let said = stdout(&out);
    assert!(
        said.contains("ACME: 2 numbers added from portal.csv"),
        "{said}"
    );
    assert!(
        said.contains("line 3: not imported: no phone number in \"sem telefone,Ana\""),
        "{said}"
    );
    let numbers: Vec<String> = listed(&dir).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        numbers,
        [
            "551133334444",
            "5511987654321",
            "5521998765432",
            "5531988887777"
        ]
    );
}
