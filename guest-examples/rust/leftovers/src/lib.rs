//! `leftovers`: looks for anything an earlier job left behind in this instance's memory, then
//! leaves marks of its own for the next job to find.
//!
//! It counts its calls in a static, and scans a 256 KiB heap allocation and a 16 KiB stack
//! buffer for the 8-byte mark `LEFTOVER`, which it then writes all over both (the heap one is
//! leaked, so it stays in memory after the call). The result is
//! `calls=<n> heap=<marks found> stack=<marks found>`: every job in a fresh instance must see
//! `calls=1 heap=0 stack=0`, however many jobs ran in the same pool slot before it. (Looking for
//! a mark rather than for any non-zero byte keeps the allocator's own bookkeeping out of it.)
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU32, Ordering};

use wasmq_guest::{Handler, Job, JobError};

static CALLS: AtomicU32 = AtomicU32::new(0);

const MARK: [u8; 8] = *b"LEFTOVER";
const HEAP_BYTES: usize = 256 * 1024;
const STACK_BYTES: usize = 16 * 1024;

/// Counts the aligned marks in `bytes` (read with volatile reads: they may be uninitialised),
/// then writes the mark all over them.
fn scan_and_mark(bytes: &mut [MaybeUninit<u8>]) -> usize {
    let mut found = 0;
    for chunk in bytes.chunks_exact_mut(MARK.len()) {
        let mut seen = [0u8; 8];
        for (i, byte) in chunk.iter().enumerate() {
            // SAFETY: a volatile read of a byte in bounds; any bit pattern is a valid u8.
            seen[i] = unsafe { std::ptr::read_volatile(byte.as_ptr()) };
        }
        if seen == MARK {
            found += 1;
        }
        for (byte, value) in chunk.iter_mut().zip(MARK) {
            byte.write(value);
        }
    }
    found
}

#[inline(never)]
fn stack_leftovers() -> usize {
    let mut buffer = [MaybeUninit::<u8>::uninit(); STACK_BYTES];
    let found = scan_and_mark(&mut buffer);
    black_box(&buffer);
    found
}

struct Leftovers;

impl Handler for Leftovers {
    fn handle(_job: Job) -> Result<Vec<u8>, JobError> {
        let calls = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
        let stack = stack_leftovers();
        let mut heap: Vec<u8> = Vec::with_capacity(HEAP_BYTES);
        let heap_found = scan_and_mark(heap.spare_capacity_mut());
        black_box(&heap);
        std::mem::forget(heap);
        Ok(format!("calls={calls} heap={heap_found} stack={stack}").into_bytes())
    }
}

wasmq_guest::export_handler!(Leftovers);
