//! capdma's build automation (`cargo xtask ...`, an alias in
//! `.cargo/config.toml`).
//!
//! * `cargo xtask windows` — check the host prerequisites, prepare the
//!   synthesised WDK root and the patched `wdk-build`, cross-build
//!   `capdma_bus.sys` and `capdma_avstream.sys`, and PE-check them.
//! * `cargo xtask pe-check FILE...` — the PE check alone.
//! * `cargo xtask prereqs` — the prerequisite check alone.
//!
//! See `docs/windows-build.md`.

mod cross_build;
mod def_file;
mod import_policy;
mod linker_map;
mod lockfile;
mod pe_check;
mod pe_image;
mod prereqs;
mod privileged;
mod stamp;
mod wdk_build_patch;
mod wdk_root;
mod wdk_shim;
mod workspace;

/// The driver packages' build script logic, compiled here for its tests.
#[cfg(all(test, not(windows)))]
#[path = "../build-support/driver_build.rs"]
#[allow(dead_code)]
mod driver_build;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  windows [--debug] [--skip-required-imports] [--no-pe-check] [-p|--package <package>]...
      cross-build capdma_bus.sys and capdma_avstream.sys for x86_64-pc-windows-msvc
      (release profile unless --debug) into target/windows/<profile>/, then PE-check them;
      with -p/--package (capdma-bus, capdma-avstream; repeatable) only the packages named
  pe-check [--skip-required-imports] FILE.sys...
      check PE images: AMD64, NATIVE subsystem, DriverEntry entry point, imports only
      from ntoskrnl.exe/hal.dll/ks.sys, required imports (xtask/src/import_policy.rs)
  prereqs
      check the host tools the cross build needs and say how to install missing ones
  help
      this text";

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
enum Task {
    Windows {
        release: bool,
        skip_required: bool,
        pe_check: bool,
        /// Driver packages to build; empty: all.
        packages: Vec<String>,
    },
    PeCheck {
        skip_required: bool,
        files: Vec<PathBuf>,
    },
    Prereqs,
    Help,
}

/// Splits `rest` into the `allowed` flags seen and the other (file) arguments.
fn split_flags(
    command: &str,
    rest: &[String],
    allowed: &[&'static str],
) -> Result<(Vec<&'static str>, Vec<PathBuf>)> {
    let mut seen = Vec::new();
    let mut files = Vec::new();
    for arg in rest {
        if let Some(flag) = allowed.iter().find(|f| **f == arg.as_str()) {
            seen.push(*flag);
        } else if arg.starts_with('-') {
            bail!("`{command}` does not take `{arg}`\n\n{USAGE}");
        } else {
            files.push(PathBuf::from(arg));
        }
    }
    Ok((seen, files))
}

fn parse(args: &[String]) -> Result<Task> {
    let Some((command, rest)) = args.split_first() else {
        return Ok(Task::Help);
    };
    let flags = |allowed: &[&'static str]| split_flags(command, rest, allowed);
    match command.as_str() {
        "windows" => {
            let (rest, packages) = take_packages(rest)?;
            let (seen, files) = split_flags(
                command,
                &rest,
                &["--debug", "--skip-required-imports", "--no-pe-check"],
            )?;
            if let Some(file) = files.first() {
                bail!(
                    "`windows` takes no file arguments (got `{}`)\n\n{USAGE}",
                    file.display()
                );
            }
            Ok(Task::Windows {
                release: !seen.contains(&"--debug"),
                skip_required: seen.contains(&"--skip-required-imports"),
                pe_check: !seen.contains(&"--no-pe-check"),
                packages,
            })
        }
        "pe-check" => {
            let (seen, files) = flags(&["--skip-required-imports"])?;
            Ok(Task::PeCheck {
                skip_required: !seen.is_empty(),
                files,
            })
        }
        "prereqs" if rest.is_empty() => Ok(Task::Prereqs),
        "help" | "--help" | "-h" => Ok(Task::Help),
        other => bail!("unknown command or arguments: `{other}`\n\n{USAGE}"),
    }
}

/// Splits `-p <package>`, `--package <package>` and `--package=<package>`
/// out of `args`: returns the other arguments and the package names.
fn take_packages(args: &[String]) -> Result<(Vec<String>, Vec<String>)> {
    let mut rest = Vec::new();
    let mut packages = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "-p" || arg == "--package" {
            match iter.next() {
                Some(name) if !name.starts_with('-') => packages.push(name.clone()),
                _ => bail!("`{arg}` needs a package name\n\n{USAGE}"),
            }
        } else if let Some(name) = arg.strip_prefix("--package=") {
            packages.push(name.to_owned());
        } else {
            rest.push(arg.clone());
        }
    }
    cross_build::select_packages(&packages)?;
    Ok((rest, packages))
}

fn run(task: Task) -> Result<()> {
    match task {
        Task::Help => println!("{USAGE}"),
        Task::Prereqs => {
            let tc = prereqs::check()?;
            println!("all prerequisites present:\n{tc:#?}");
        }
        Task::PeCheck {
            skip_required,
            files,
        } => {
            pe_check::run(
                &files,
                pe_check::Options {
                    skip_required_imports: skip_required,
                },
            )?;
        }
        Task::Windows {
            release,
            skip_required,
            pe_check,
            packages,
        } => {
            let tc = prereqs::check()?;
            println!("[windows] prerequisites  present");
            let packages = cross_build::select_packages(&packages)?;
            let images = cross_build::run(&tc, cross_build::Options { release }, &packages)?;
            if pe_check {
                pe_check::run(
                    &images,
                    pe_check::Options {
                        skip_required_imports: skip_required,
                    },
                )?;
            } else {
                println!("[windows] PE check       NOT RUN (--no-pe-check)");
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_commands_and_flags() {
        assert_eq!(parse(&[]).unwrap(), Task::Help);
        assert_eq!(
            parse(&args(&["windows"])).unwrap(),
            Task::Windows {
                release: true,
                skip_required: false,
                pe_check: true,
                packages: Vec::new(),
            }
        );
        assert_eq!(
            parse(&args(&["windows", "--debug", "--skip-required-imports"])).unwrap(),
            Task::Windows {
                release: false,
                skip_required: true,
                pe_check: true,
                packages: Vec::new(),
            }
        );
        assert_eq!(
            parse(&args(&[
                "windows",
                "-p",
                "capdma-bus",
                "--no-pe-check",
                "--package=capdma-avstream"
            ]))
            .unwrap(),
            Task::Windows {
                release: true,
                skip_required: false,
                pe_check: false,
                packages: vec!["capdma-bus".into(), "capdma-avstream".into()],
            }
        );
        assert_eq!(
            parse(&args(&[
                "pe-check",
                "a.sys",
                "--skip-required-imports",
                "b.sys"
            ]))
            .unwrap(),
            Task::PeCheck {
                skip_required: true,
                files: vec!["a.sys".into(), "b.sys".into()]
            }
        );
        assert_eq!(parse(&args(&["prereqs"])).unwrap(), Task::Prereqs);
    }

    #[test]
    fn rejects_unknown_input() {
        assert!(parse(&args(&["build"])).is_err());
        assert!(parse(&args(&["windows", "--relase"])).is_err());
        assert!(parse(&args(&["windows", "x.sys"])).is_err());
        assert!(parse(&args(&["prereqs", "x"])).is_err());
        assert!(parse(&args(&["pe-check", "--debug"])).is_err());
        assert!(parse(&args(&["windows", "-p"])).is_err());
        assert!(parse(&args(&["windows", "-p", "--debug"])).is_err());
        assert!(parse(&args(&["windows", "--package", "capdma-sim"])).is_err());
        assert!(parse(&args(&["pe-check", "-p", "capdma-bus", "x.sys"])).is_err());
    }
}
