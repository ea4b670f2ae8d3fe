//! `smsdrop generate`: shell completions and man pages generated from the CLI definition, for
//! packagers (`packaging/build-deb.sh`). Needs no config file and never touches the state folder.
//! Everything is rendered into memory first (clap's generators panic on a failed write), then
//! written to `--out` with the path named in any error.

use anyhow::Context;
use clap::{Args, Subcommand};
use clap_complete::Shell;
use std::fs;
use std::path::{Path, PathBuf};

/// The shells `generate all` writes completions for: those the Debian package installs.
const PACKAGED_SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// What `smsdrop generate` writes.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Writes a completion script per shell: `smsdrop.bash`, `_smsdrop`, `smsdrop.fish`, ...
    Completions {
        /// The shell (repeat for several; default: bash, zsh and fish).
        #[arg(long, value_enum)]
        shell: Vec<Shell>,
        /// Folder to write into (created when missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Writes the man pages: `smsdrop.1` and one `smsdrop-COMMAND.1` per subcommand.
    Man {
        /// Folder to write into (created when missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Writes both: completions for bash, zsh and fish into `OUT/completions/`, man pages into
    /// `OUT/man/`.
    All {
        /// Folder to write into (created when missing).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Writes what `args` asks for and prints one line per file written.
///
/// # Errors
/// A folder that cannot be created or a file that cannot be written, with its path.
pub fn run(args: &GenerateArgs, cli: clap::Command) -> anyhow::Result<()> {
    let command = || cli.clone().bin_name(BIN_NAME);
    let written = match &args.what {
        What::Completions { shell, out } => {
            let shells = if shell.is_empty() {
                &PACKAGED_SHELLS[..]
            } else {
                &shell[..]
            };
            completions(shells, out, &command)?
        }
        What::Man { out } => man_pages(out, command())?,
        What::All { out } => {
            let mut written = completions(&PACKAGED_SHELLS, &out.join("completions"), &command)?;
            written.extend(man_pages(&out.join("man"), command())?);
            written
        }
    };
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

const BIN_NAME: &str = "smsdrop";

fn completions(
    shells: &[Shell],
    out: &Path,
    command: &dyn Fn() -> clap::Command,
) -> anyhow::Result<Vec<PathBuf>> {
    create_dir(out)?;
    let mut written = Vec::new();
    for &shell in shells {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command(), BIN_NAME, &mut script);
        let path = out.join(clap_complete::Generator::file_name(&shell, BIN_NAME));
        write(&path, &script)?;
        written.push(path);
    }
    Ok(written)
}

/// One page for `smsdrop` and one per visible subcommand (`smsdrop-run.1`, ...), as
/// `clap_mangen::generate_to` lays them out.
fn man_pages(out: &Path, command: clap::Command) -> anyhow::Result<Vec<PathBuf>> {
    create_dir(out)?;
    let mut cmd = command.disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    collect_pages(&cmd, &mut pages);
    let mut written = Vec::new();
    for page in pages {
        let man = clap_mangen::Man::new(page);
        let mut roff = Vec::new();
        man.render(&mut roff)
            .context("rendering a man page into memory")?;
        let path = out.join(man.get_filename());
        write(&path, &roff)?;
        written.push(path);
    }
    Ok(written)
}

/// `cmd` and its visible subcommands, depth first.
fn collect_pages(cmd: &clap::Command, pages: &mut Vec<clap::Command>) {
    pages.push(cmd.clone());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect_pages(sub, pages);
    }
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
