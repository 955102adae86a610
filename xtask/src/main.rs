//! capdma's build automation (`cargo xtask ...`, an alias in
//! `.cargo/config.toml`).
//!
//! * `cargo xtask windows` — check the host prerequisites, prepare the
//!   synthesised WDK root and the patched `wdk-build`, cross-build
//!   `capdma_bus.sys` and `capdma_avstream.sys`, and PE-check them.
//! * `cargo xtask package` — the above for the shipping drivers, then per
//!   driver the folder `inf2cat` and `signtool` take (`.sys`, `.pdb`, and
//!   the `.inf` stamped from `inf/<lib>.inx`).
//! * `cargo xtask pe-check FILE...` — the PE check alone.
//! * `cargo xtask prereqs` — the prerequisite check alone.
//!
//! See `docs/windows-build.md`.

mod cross_build;
mod def_file;
mod hvci;
mod import_policy;
mod linker_map;
mod lockfile;
mod package;
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

use anyhow::Result;
use clap::{Args, CommandFactory, Parser, Subcommand};

/// capdma's build automation: the Linux cross build of the `.sys` images
/// and their PE check.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about,
    after_help = "Exit status: 0 success, 1 a step failed, 2 a usage error.\n\
                  See docs/windows-build.md."
)]
struct Cli {
    /// What to do (without one: this help).
    #[command(subcommand)]
    command: Option<Task>,
}

/// The commands.
#[derive(Debug, PartialEq, Eq, Subcommand)]
enum Task {
    /// Cross-build the driver images for x86_64-pc-windows-msvc into
    /// target/windows/PROFILE/, then PE-check them.
    Windows(WindowsArgs),
    /// Build and PE-check the shipping drivers, then write per driver the
    /// folder inf2cat and signtool take, as cargo-wdk lays it out:
    /// a package folder per driver in target/windows/PROFILE/ with its
    /// .sys, .pdb, .map and its .inf stamped from its .inx in inf/.
    Package(PackageArgs),
    /// Check PE images: machine AMD64, subsystem NATIVE, the entry point,
    /// the modules imported from and the required imports.
    PeCheck(PeCheckArgs),
    /// Check the host tools the cross build needs and say how to install
    /// missing ones.
    Prereqs,
}

/// `cargo xtask windows` options.
#[derive(Debug, PartialEq, Eq, Args)]
#[allow(clippy::struct_excessive_bools, reason = "independent command-line flags")]
struct WindowsArgs {
    /// Build with the dev profile instead of release (images in
    /// target/windows/debug/).
    #[arg(long)]
    debug: bool,
    /// Run the PE check without the required-import lists (loudly reported).
    #[arg(long)]
    skip_required_imports: bool,
    /// Build only, no PE check.
    #[arg(long)]
    no_pe_check: bool,
    /// Lint the drivers for the Windows target (their glue included) with
    /// clippy, warnings as errors, instead of building images.
    #[arg(long, conflicts_with_all = ["no_pe_check", "skip_required_imports"])]
    clippy: bool,
    /// Build (and check) only this driver package; repeatable; default: all.
    #[arg(
        short = 'p',
        long = "package",
        value_name = "PACKAGE",
        value_parser = clap::builder::PossibleValuesParser::new(cross_build::DRIVER_PACKAGES.iter().copied())
    )]
    packages: Vec<String>,
}

/// `cargo xtask package` options.
#[derive(Debug, PartialEq, Eq, Args)]
struct PackageArgs {
    /// Build with the dev profile instead of release (folders in
    /// target/windows/debug/).
    #[arg(long)]
    debug: bool,
    /// Package only this driver; repeatable; default: all.
    #[arg(
        short = 'p',
        long = "package",
        value_name = "PACKAGE",
        value_parser = clap::builder::PossibleValuesParser::new(package::PACKAGED_DRIVERS.iter().copied())
    )]
    packages: Vec<String>,
    #[arg(
        long,
        value_name = "MM/DD/YYYY",
        value_parser = package::parse_date,
        help = "DriverVer's date [default: today in UTC, or the date of SOURCE_DATE_EPOCH]"
    )]
    date: Option<time::Date>,
    #[arg(
        long,
        value_name = "W.X.Y.Z",
        value_parser = package::parse_version,
        help = "DriverVer's version, each part below 65535 [default: the package's version, x.y.z.0]"
    )]
    driver_version: Option<[u16; 4]>,
}

/// `cargo xtask pe-check` options.
#[derive(Debug, PartialEq, Eq, Args)]
struct PeCheckArgs {
    /// Skip the required-import lists (loudly reported).
    #[arg(long)]
    skip_required_imports: bool,
    /// The images to check.
    #[arg(value_name = "FILE.sys", required = true)]
    files: Vec<PathBuf>,
}

fn run(task: Task) -> Result<()> {
    match task {
        Task::Package(args) => {
            let tc = prereqs::check()?;
            println!("[windows] prerequisites  present");
            let packages = package::select(&args.packages)?;
            let options = package::Options {
                build: cross_build::Options {
                    release: !args.debug,
                    clippy: false,
                },
                date: args.date,
                version: args.driver_version,
            };
            package::run(&tc, &options, &packages)?;
        }
        Task::Prereqs => {
            let tc = prereqs::check()?;
            println!("all prerequisites present:\n{tc:#?}");
        }
        Task::PeCheck(args) => {
            pe_check::run(
                &args.files,
                pe_check::Options {
                    skip_required_imports: args.skip_required_imports,
                },
            )?;
        }
        Task::Windows(args) => {
            let tc = prereqs::check()?;
            println!("[windows] prerequisites  present");
            let packages = cross_build::select_packages(&args.packages)?;
            let options = cross_build::Options {
                release: !args.debug,
                clippy: args.clippy,
            };
            let images = cross_build::run(&tc, options, &packages)?;
            if args.clippy {
                // Linted, nothing built.
            } else if args.no_pe_check {
                println!("[windows] PE check       NOT RUN (--no-pe-check)");
            } else {
                pe_check::run(
                    &images,
                    pe_check::Options {
                        skip_required_imports: args.skip_required_imports,
                    },
                )?;
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // A usage error exits 2 (clap's own exit), `--help` 0.
    let Some(task) = Cli::parse().command else {
        let _ = Cli::command().print_help();
        return ExitCode::SUCCESS;
    };
    match run(task) {
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

    fn parse(list: &[&str]) -> Result<Option<Task>, clap::Error> {
        Cli::try_parse_from(std::iter::once("xtask").chain(list.iter().copied()))
            .map(|cli| cli.command)
    }

    fn windows(debug: bool, skip: bool, no_pe_check: bool, packages: &[&str]) -> Task {
        Task::Windows(WindowsArgs {
            debug,
            skip_required_imports: skip,
            no_pe_check,
            clippy: false,
            packages: packages.iter().map(|p| (*p).to_owned()).collect(),
        })
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_commands_and_flags() {
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(
            parse(&["windows"]).unwrap(),
            Some(windows(false, false, false, &[]))
        );
        assert_eq!(
            parse(&["windows", "--debug", "--skip-required-imports"]).unwrap(),
            Some(windows(true, true, false, &[]))
        );
        assert_eq!(
            parse(&[
                "windows",
                "-p",
                "capdma-bus",
                "--no-pe-check",
                "--package=capdma-avstream"
            ])
            .unwrap(),
            Some(windows(
                false,
                false,
                true,
                &["capdma-bus", "capdma-avstream"]
            ))
        );
        assert_eq!(
            parse(&["pe-check", "a.sys", "--skip-required-imports", "b.sys"]).unwrap(),
            Some(Task::PeCheck(PeCheckArgs {
                skip_required_imports: true,
                files: vec!["a.sys".into(), "b.sys".into()]
            }))
        );
        assert_eq!(parse(&["prereqs"]).unwrap(), Some(Task::Prereqs));
        assert_eq!(
            parse(&["package"]).unwrap(),
            Some(Task::Package(PackageArgs {
                debug: false,
                packages: Vec::new(),
                date: None,
                driver_version: None,
            }))
        );
        let Some(Task::Package(args)) = parse(&[
            "package",
            "--debug",
            "-p",
            "capdma-avstream",
            "--date",
            "12/31/2025",
            "--driver-version",
            "1.2.3.4",
        ])
        .unwrap() else {
            panic!("not a package task");
        };
        assert!(args.debug);
        assert_eq!(args.packages, ["capdma-avstream"]);
        assert_eq!(
            args.date.map(|d| d.to_string()).as_deref(),
            Some("2025-12-31")
        );
        assert_eq!(args.driver_version, Some([1, 2, 3, 4]));
    }

    #[test]
    fn clippy_is_a_mode_of_windows_without_the_pe_check_flags() {
        let Some(Task::Windows(args)) = parse(&["windows", "--clippy", "-p", "capdma-bus"]).unwrap() else {
            panic!("not a windows task");
        };
        assert!(args.clippy);
        assert_eq!(args.packages, ["capdma-bus"]);
        for args in [&["windows", "--clippy", "--no-pe-check"][..], &["windows", "--clippy", "--skip-required-imports"]] {
            assert_eq!(parse(args).expect_err("conflicting flags").exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn rejects_unknown_input_as_usage_errors() {
        for args in [
            &["build"][..],
            &["windows", "--relase"],
            &["windows", "x.sys"],
            &["prereqs", "x"],
            &["pe-check", "--debug"],
            &["pe-check"],
            &["windows", "-p"],
            &["windows", "-p", "--debug"],
            &["windows", "--package", "capdma-sim"],
            &["pe-check", "-p", "capdma-bus", "x.sys"],
            &["package", "--date", "2025-12-31"],
            &["package", "--date", "02/30/2025"],
            &["package", "--driver-version", "1.2.3"],
            &["package", "--driver-version", "0.0.0.0"],
            &["package", "-p", "capdma-sim"],
            &["package", "x.sys"],
        ] {
            let error = parse(args).expect_err(&format!("{args:?} was accepted"));
            assert_eq!(error.exit_code(), 2, "{args:?}: {error}");
        }
    }

    #[test]
    fn help_is_not_an_error() {
        for args in [
            &["--help"][..],
            &["help"],
            &["windows", "--help"],
            &["help", "pe-check"],
        ] {
            let error = parse(args).expect_err("help is reported through clap's error path");
            assert_eq!(error.exit_code(), 0, "{args:?}");
        }
    }
}
