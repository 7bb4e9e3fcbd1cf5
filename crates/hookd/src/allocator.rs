//! The process's allocator: mimalloc, for Rust's allocations and for SQLite's.
//!
//! With glibc's malloc, `malloc`, `free` and their helpers were about a quarter of the
//! SQLite writer thread's samples at saturation, and that thread is the one every write
//! waits for (docs/benchmarks.md). mimalloc's `override` feature would
//! replace `malloc` for every C library in the process, but then an `LD_PRELOAD`ed library
//! that allocates while it loads (libfaketime, in the fault suite) crashes hookd at start;
//! so SQLite is pointed at mimalloc through its own setting instead.

use std::os::raw::{c_int, c_void};

use libmimalloc_sys::{mi_free, mi_good_size, mi_malloc, mi_realloc, mi_usable_size};
use libsqlite3_sys::{sqlite3_config, sqlite3_mem_methods, SQLITE_CONFIG_MALLOC, SQLITE_OK};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Makes SQLite allocate through mimalloc. Call it before the first SQLite connection
/// opens: SQLite takes the setting only before it initializes, and refuses it afterwards
/// (then this returns false and SQLite keeps the C library's malloc, which is still
/// correct: every block is freed by the allocator that made it).
pub fn use_for_sqlite() -> bool {
    let methods = sqlite3_mem_methods {
        xMalloc: Some(sqlite_malloc),
        xFree: Some(sqlite_free),
        xRealloc: Some(sqlite_realloc),
        xSize: Some(sqlite_size),
        xRoundup: Some(sqlite_roundup),
        xInit: Some(sqlite_init),
        xShutdown: Some(sqlite_shutdown),
        pAppData: std::ptr::null_mut(),
    };
    // SAFETY: SQLITE_CONFIG_MALLOC takes a pointer to an `sqlite3_mem_methods`, which
    // SQLite copies before returning; every function in it has the signature SQLite
    // expects. Before initialization no SQLite allocation exists that another allocator
    // would have to free; after it, SQLite refuses the change with SQLITE_MISUSE.
    unsafe {
        sqlite3_config(SQLITE_CONFIG_MALLOC, &methods as *const sqlite3_mem_methods) == SQLITE_OK
    }
}

/// SQLite asks for sizes as `int`; never negative, but a negative one must not wrap to a
/// huge request.
fn size(n: c_int) -> usize {
    usize::try_from(n).unwrap_or(0)
}

unsafe extern "C" fn sqlite_malloc(n: c_int) -> *mut c_void {
    // SAFETY: any size is valid; mimalloc returns null when out of memory, as SQLite expects.
    unsafe { mi_malloc(size(n)) }
}

unsafe extern "C" fn sqlite_free(p: *mut c_void) {
    // SAFETY: SQLite frees only what `sqlite_malloc`/`sqlite_realloc` returned.
    unsafe { mi_free(p) }
}

unsafe extern "C" fn sqlite_realloc(p: *mut c_void, n: c_int) -> *mut c_void {
    // SAFETY: as for `sqlite_free`; SQLite never reallocates to size 0 through here.
    unsafe { mi_realloc(p, size(n)) }
}

unsafe extern "C" fn sqlite_size(p: *mut c_void) -> c_int {
    // SAFETY: as for `sqlite_free`; SQLite's blocks are far below `c_int::MAX`.
    unsafe { c_int::try_from(mi_usable_size(p)).unwrap_or(c_int::MAX) }
}

unsafe extern "C" fn sqlite_roundup(n: c_int) -> c_int {
    // SAFETY: a pure function of the size.
    let rounded = unsafe { mi_good_size(size(n)) };
    c_int::try_from(rounded).unwrap_or(n)
}

unsafe extern "C" fn sqlite_init(_: *mut c_void) -> c_int {
    SQLITE_OK
}

unsafe extern "C" fn sqlite_shutdown(_: *mut c_void) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_never_wrap() {
        assert_eq!(size(-1), 0);
        assert_eq!(size(0), 0);
        assert_eq!(size(4096), 4096);
        // SAFETY: plain calls of the functions SQLite would make, on blocks they return.
        unsafe {
            let p = sqlite_malloc(100);
            assert!(!p.is_null());
            assert!(sqlite_size(p) >= 100);
            let q = sqlite_realloc(p, 10_000);
            assert!(sqlite_size(q) >= 10_000);
            sqlite_free(q);
            assert!(sqlite_roundup(100) >= 100);
        }
    }
}
