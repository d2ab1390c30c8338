//! Phase integration through the C ABI on any gradient values and small shapes.
#![no_main]

use espinnet::capi::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (h, w) = (1 + data[0] as usize % 64, 1 + data[1] as usize % 64);
    let method = if data[2] % 2 == 0 { c"frankot-chellappa" } else { c"least-squares" };
    let values: Vec<f32> = data[3..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .chain(std::iter::repeat(0.0))
        .take(2 * h * w)
        .collect();
    let (gx, gy) = values.split_at(h * w);
    let mut phase = vec![0f32; h * w];
    let s = unsafe {
        esp_integrate(gx.as_ptr(), gy.as_ptr(), h * w, h, w, method.as_ptr(), phase.as_mut_ptr())
    };
    assert_ne!(s, EspStatus::Panic);
});
