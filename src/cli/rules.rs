//! `netsight rules check|test`: promtool-style tooling for rule files.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::rules::{self, RuleSource};

#[derive(Args, Debug)]
pub struct RulesArgs {
    #[command(subcommand)]
    pub command: RulesCommand,
}

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// Validate rule files; every error is printed as FILE:LINE:COLUMN: message.
    Check {
        /// Rule files (YAML).
        files: Vec<PathBuf>,
        /// Also load the embedded packs, so causes may name their rules.
        #[arg(long)]
        with_embedded: bool,
    },
    /// Run rule unit tests (input series, expected anomalies and causes).
    Test { files: Vec<PathBuf> },
}

/// Returns the process exit code: 0 all good, 1 errors or failures.
pub fn run(args: RulesArgs) -> anyhow::Result<u8> {
    match args.command {
        RulesCommand::Check { files, with_embedded } => {
            let mut sources = if with_embedded {
                rules::sources::embedded()
            } else {
                Vec::new()
            };
            if files.is_empty() && !with_embedded {
                sources = rules::sources::embedded();
            }
            let mut errors = Vec::new();
            for f in &files {
                match std::fs::read_to_string(f) {
                    Ok(text) => sources.push(RuleSource {
                        name: f.display().to_string(),
                        text,
                    }),
                    Err(e) => errors.push(format!("{}: {e}", f.display())),
                }
            }
            match rules::load(&sources) {
                Ok(set) if errors.is_empty() => {
                    println!("OK: {} rules in {} files", set.rules.len(), sources.len());
                    Ok(0)
                }
                Ok(_) => {
                    for e in errors {
                        eprintln!("{e}");
                    }
                    Ok(1)
                }
                Err(rule_errors) => {
                    for e in errors {
                        eprintln!("{e}");
                    }
                    for e in rule_errors {
                        eprintln!("{e}");
                    }
                    Ok(1)
                }
            }
        }
        RulesCommand::Test { files } => {
            let mut failed = 0;
            for f in &files {
                match rules::testing::run_file(f) {
                    Ok(failures) if failures.is_empty() => println!("PASS {}", f.display()),
                    Ok(failures) => {
                        failed += 1;
                        println!("FAIL {}", f.display());
                        for m in failures {
                            println!("  {m}");
                        }
                    }
                    Err(errors) => {
                        failed += 1;
                        println!("FAIL {}", f.display());
                        for e in errors {
                            println!("  {e}");
                        }
                    }
                }
            }
            Ok(if failed > 0 { 1 } else { 0 })
        }
    }
}
