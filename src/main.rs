use std::process::ExitCode;

/// mimalloc ([`netsight::alloc`]). `benches/collect.rs` declares the same
/// allocator and settings, so that it measures what the daemon runs.
#[global_allocator]
static ALLOCATOR: netsight::alloc::Allocator = netsight::alloc::Allocator {};

/// Run by the loader before `main` and before Rust's runtime allocates anything.
#[used]
#[link_section = ".init_array"]
static CONFIGURE_ALLOCATOR: extern "C" fn() = netsight::alloc::configure_before_first_allocation;

use clap::Parser;
use netsight::cli::{self, Cli, Command};

fn main() -> ExitCode {
    // Test runs use debug builds: they fail here if the linker dropped the hook.
    debug_assert!(netsight::alloc::configured(), "allocator settings not applied");
    let cli = Cli::parse();
    let log = match &cli.command {
        Command::Serve(a) => a.common.log_level.clone(),
        Command::Collect(a) => a.common.log_level.clone(),
        _ => "warn".to_string(),
    };
    cli::init_logging(&log);
    // Two async workers although one would save ~0.15 ms of wake-ups per idle tick:
    // async handlers (/api/v1/events, the notifier, rule reloads) take the engine
    // lock that a rules evaluation holds for up to ~20 ms, and with one worker
    // scrapes and OTLP pushes would wait behind them.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("netsight: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::Analyze(a) = cli.command {
        return match cli::analyze::run(a) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("netsight: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Diagnose(a) = cli.command {
        return exit_with(cli::diagnose::run(a));
    }
    if let Command::Detect(a) = cli.command {
        return exit_with(cli::detect::run(a));
    }
    if let Command::Monitor(a) = cli.command {
        return exit_with(runtime.block_on(cli::monitor::run(a)));
    }
    if let Command::Rules(a) = cli.command {
        return match cli::rules::run(a) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("netsight: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    if let Command::Replay(a) = cli.command {
        return match cli::replay::run(a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("netsight: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Rules(_)
            | Command::Replay(_)
            | Command::Analyze(_)
            | Command::Diagnose(_)
            | Command::Detect(_)
            | Command::Monitor(_) => Ok(()),
            Command::Serve(a) => cli::serve::run(a).await,
            Command::Collect(a) => cli::collect::run(a).await,
            Command::Catalog(a) => {
                if a.markdown {
                    print!("{}", netsight::catalog::render_markdown());
                } else {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&netsight::catalog::all_metrics_json())?
                    );
                }
                Ok(())
            }
            Command::Version => {
                println!("netsight {}", env!("CARGO_PKG_VERSION"));
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netsight: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Exit code of the diagnostic commands: their own code, or 2 when they could not run.
fn exit_with(r: anyhow::Result<u8>) -> ExitCode {
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("netsight: {e:#}");
            ExitCode::from(2)
        }
    }
}
