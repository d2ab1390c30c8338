//! The readers on any bytes: TIFF, `.npy` or HDF5 (the first byte chooses), written to a
//! file as a user's would be. Any result but a panic or an abort is fine; what libFuzzer's
//! `-rss_limit_mb` and `-malloc_limit_mb` catch is memory a header made up. HDF5 files are
//! read in a child process (libhdf5 crashes on some damaged files: `known-crashes/`), so
//! a crash there must come back as an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, content)) = data.split_first() else {
        return;
    };
    let (ext, dataset) = match kind % 3 {
        0 => ("tif", ""),
        1 => ("npy", ""),
        _ => ("h5", ":/data"),
    };
    let dir = std::env::temp_dir().join(format!("espinnet-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("input.{ext}"));
    std::fs::write(&path, content).unwrap();
    if let Ok(stack) = espinnet::io::read_stack(&format!("{}{dataset}", path.display())) {
        // What a reader returns is a stack the engines accept the shape of.
        let (n, h, w) = stack.dim();
        assert!(n >= 1 && h >= 1 && w >= 1, "empty stack {n}x{h}x{w}");
    }
});
