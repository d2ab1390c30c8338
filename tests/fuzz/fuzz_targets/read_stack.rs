//! The readers on any bytes: TIFF or `.npy` (the first byte chooses), written to a file as
//! a user's would be. Any result but a panic or an abort is fine; what libFuzzer's
//! `-rss_limit_mb` and `-malloc_limit_mb` catch is memory a header made up. HDF5 is not
//! fuzzed here: its files are parsed by libhdf5 (C), which crashes on some damaged files
//! within minutes of fuzzing, inside its own code (see `tests/io.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, content)) = data.split_first() else {
        return;
    };
    let ext = if kind % 2 == 0 { "tif" } else { "npy" };
    let dir = std::env::temp_dir().join(format!("espinnet-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("input.{ext}"));
    std::fs::write(&path, content).unwrap();
    if let Ok(stack) = espinnet::io::read_stack(&path.display().to_string()) {
        // What a reader returns is a stack the engines accept the shape of.
        let (n, h, w) = stack.dim();
        assert!(n >= 1 && h >= 1 && w >= 1, "empty stack {n}x{h}x{w}");
    }
});
