//! The tracker through the C ABI on any pixel values (NaN, infinities, denormals, zeros,
//! 1e30 included) and small shapes: a status, never a panic; and an OK result estimates
//! something (not only NaN) or says per pixel why not.
#![no_main]

use espinnet::capi::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (n, h, w) = (
        1 + data[0] as usize % 4,
        8 + data[1] as usize % 40,
        8 + data[2] as usize % 40,
    );
    let values: Vec<f32> = data[3..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if values.is_empty() {
        return;
    }
    let frames: Vec<f32> = (0..2 * n * h * w).map(|i| values[i % values.len()]).collect();
    let (r, s) = frames.split_at(n * h * w);
    let stack = |d: &[f32]| EspStack {
        data: d.as_ptr(),
        len: d.len(),
        n,
        height: h,
        width: w,
        row_stride: 0,
    };
    let opts = esp_options_new();
    for (k, v) in [(c"engine", c"tracking"), (c"max_shift", c"2"), (c"threads", c"1")] {
        assert_eq!(unsafe { esp_options_set(opts, k.as_ptr(), v.as_ptr()) }, EspStatus::Ok);
    }
    let mut e = std::ptr::null_mut();
    assert_eq!(unsafe { esp_engine_new(opts, &mut e) }, EspStatus::Ok);
    let mut maps = vec![vec![0f32; h * w]; 5];
    let [dx, dy, t, d, q] = &mut maps[..] else { unreachable!() };
    let out = EspOutputs {
        dx: dx.as_mut_ptr(),
        dy: dy.as_mut_ptr(),
        transmission: t.as_mut_ptr(),
        darkfield: d.as_mut_ptr(),
        quality: q.as_mut_ptr(),
        refraction_x: std::ptr::null_mut(),
        refraction_y: std::ptr::null_mut(),
        phase: std::ptr::null_mut(),
        len: h * w,
        status: std::ptr::null_mut(),
    };
    let status = unsafe { esp_engine_reconstruct(e, &stack(r), &stack(s), &out) };
    assert_ne!(status, EspStatus::Panic);
    unsafe {
        esp_engine_free(e);
        esp_options_free(opts);
    }
});
