//! The C ABI's option parser on any `key=value` lines, then an engine from those options
//! (the tracker: the network's model loading is ONNX Runtime's own parser). A panic that
//! the ABI's guard turned into `ESP_STATUS_PANIC` is a bug, so it fails the target.
#![no_main]

use std::ffi::CString;

use espinnet::capi::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let opts = esp_options_new();
    assert!(!opts.is_null());
    for line in text.lines() {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        if key == "ort_library" || key == "model" || key == "trt_cache" || key == "debug_panic" {
            continue; // paths the fuzzer would make the process load or create
        }
        let (Ok(k), Ok(v)) = (CString::new(key), CString::new(value)) else {
            continue;
        };
        let s = unsafe { esp_options_set(opts, k.as_ptr(), v.as_ptr()) };
        assert_ne!(s, EspStatus::Panic, "{key}={value}");
    }
    let engine = c"engine";
    let tracking = c"tracking";
    assert_eq!(
        unsafe { esp_options_set(opts, engine.as_ptr(), tracking.as_ptr()) },
        EspStatus::Ok
    );
    let mut e = std::ptr::null_mut();
    let s = unsafe { esp_engine_new(opts, &mut e) };
    assert_ne!(s, EspStatus::Panic);
    if s == EspStatus::Ok {
        // A small run with whatever window, shift and threads were set.
        let (n, h, w) = (3usize, 24usize, 24usize);
        let frames: Vec<f32> = (0..n * h * w)
            .map(|i| 1.0 + 0.5 * ((i * 7919 % 101) as f32 / 101.0))
            .collect();
        let stack = EspStack {
            data: frames.as_ptr(),
            len: frames.len(),
            n,
            height: h,
            width: w,
            row_stride: 0,
        };
        let mut dx = vec![0f32; h * w];
        let out = EspOutputs {
            dx: dx.as_mut_ptr(),
            dy: std::ptr::null_mut(),
            transmission: std::ptr::null_mut(),
            darkfield: std::ptr::null_mut(),
            quality: std::ptr::null_mut(),
            refraction_x: std::ptr::null_mut(),
            refraction_y: std::ptr::null_mut(),
            phase: std::ptr::null_mut(),
            len: h * w,
            status: std::ptr::null_mut(),
        };
        let s = unsafe { esp_engine_reconstruct(e, &stack, &stack, &out) };
        assert_ne!(s, EspStatus::Panic);
        unsafe { esp_engine_free(e) };
    }
    unsafe { esp_options_free(opts) };
});
