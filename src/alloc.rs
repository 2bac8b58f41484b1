//! The global allocator of netsight's binaries (the daemon, and the benches that
//! measure it) and the settings it runs with.
//!
//! mimalloc rather than glibc's malloc: an idle daemon tick costs ~7 % less CPU
//! with it (BENCHMARKS.md, 2026-12-05). A tick frees the previous snapshot's
//! thousands of small blocks; glibc parks them in fastbins and consolidates them
//! at its next large request, walking memory that 5 s of idleness left cold,
//! while mimalloc returns each block to the free list of its own page.

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// The allocator each binary declares as its `#[global_allocator]`.
pub type Allocator = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in `mimalloc.h` (v2 and v3); the crate's
/// bindings name no constant for it.
const MI_OPTION_ARENA_EAGER_COMMIT: mi_option_t = 4;

/// Commits mimalloc's arenas on demand. By default it commits a whole arena at
/// once where the kernel overcommits, and its purges of freed memory then only
/// reset pages (`MADV_FREE`), which stay counted in RSS: peak RSS went from
/// 12.6 MiB with glibc to 42.8 MiB at 200k sockets, and from 8 to 33 MiB on an
/// idle host; on demand it is 8 MiB idle (`cargo bench --bench collect`,
/// BENCHMARKS.md, 2026-12-05).
///
/// Must run before the first allocation: the first arena is reserved then, with
/// the setting of that moment. Each binary therefore places it in `.init_array`
/// (see `src/main.rs`), which the loader runs before Rust's runtime starts.
/// Whether it runs before or after mimalloc's own constructor does not matter:
/// `mi_option_set` needs no initialisation, and mimalloc's reading of its
/// environment variables keeps a value already set. `main` checks that it ran
/// ([`configured`]). The variable `MIMALLOC_ARENA_EAGER_COMMIT` (or its legacy
/// name `MIMALLOC_EAGER_REGION_COMMIT`), in upper case, still wins.
pub extern "C" fn configure_before_first_allocation() {
    if !overridden_by_environment() {
        // SAFETY: sets one of mimalloc's process-wide integer options, by a
        // valid index; no memory is touched.
        unsafe { mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
    }
}

fn overridden_by_environment() -> bool {
    // libc's getenv, not std::env: nothing may allocate yet.
    [c"MIMALLOC_ARENA_EAGER_COMMIT", c"MIMALLOC_EAGER_REGION_COMMIT"]
        .iter()
        // SAFETY: NUL-terminated names; no thread can be changing the
        // environment this early, and later callers only read it.
        .any(|name| unsafe { !libc::getenv(name.as_ptr()).is_null() })
}

/// Whether [`configure_before_first_allocation`] has taken effect (or the
/// environment overrides it).
pub fn configured() -> bool {
    arena_eager_commit() == 0 || overridden_by_environment()
}

/// The current value of the arena eager-commit option.
pub fn arena_eager_commit() -> std::ffi::c_long {
    // SAFETY: reads one of mimalloc's options by a valid index.
    unsafe { mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written index must name the option whose default is 2
    /// ("eagerly where the kernel overcommits") and setting it must take.
    #[test]
    fn the_option_index_names_arena_eager_commit() {
        if overridden_by_environment() {
            // The environment decides: ours must leave its value alone.
            let before = arena_eager_commit();
            configure_before_first_allocation();
            assert_eq!(arena_eager_commit(), before);
            assert!(configured());
            return;
        }
        assert_eq!(arena_eager_commit(), 2, "mimalloc's default for arena_eager_commit");
        assert!(!configured());
        configure_before_first_allocation();
        assert_eq!(arena_eager_commit(), 0);
        assert!(configured());
    }
}
