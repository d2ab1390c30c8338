//! The C ABI from the caller's side: header freshness, statuses, messages, panics contained,
//! engines shared between threads, and accuracy through the ABI.

use std::ffi::{CStr, CString};
use std::ptr;

use espinnet::capi::*;
use espinnet::simulate::{Preset, simulate};

fn last_error() -> String {
    unsafe { CStr::from_ptr(esp_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// A descriptor of a contiguous `[n, h, w]` stack.
fn stack(data: &[f32], n: usize, h: usize, w: usize) -> EspStack {
    EspStack {
        data: data.as_ptr(),
        len: data.len(),
        n,
        height: h,
        width: w,
        row_stride: 0,
    }
}

/// Outputs that ask for dx alone.
fn dx_only(dx: &mut [f32]) -> EspOutputs {
    EspOutputs {
        len: dx.len(),
        dx: dx.as_mut_ptr(),
        dy: ptr::null_mut(),
        transmission: ptr::null_mut(),
        darkfield: ptr::null_mut(),
        quality: ptr::null_mut(),
        refraction_x: ptr::null_mut(),
        refraction_y: ptr::null_mut(),
        phase: ptr::null_mut(),
        status: ptr::null_mut(),
    }
}

#[test]
fn committed_header_is_current() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(format!("{dir}/cbindgen.toml")).unwrap();
    let mut fresh = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .unwrap()
        .write(&mut fresh);
    let path = format!("{dir}/include/espinnet.h");
    if std::env::var_os("ESPINNET_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "include/espinnet.h is stale: run ESPINNET_BLESS=1 cargo test --release --test capi"
    );
    // The header's version macros match the library.
    let text = String::from_utf8(committed).unwrap();
    let version = unsafe { CStr::from_ptr(esp_version()) }
        .to_str()
        .unwrap()
        .to_string();
    let parts: Vec<&str> = version.split('.').collect();
    for (name, v) in ["MAJOR", "MINOR", "PATCH"].iter().zip(&parts) {
        assert!(
            text.contains(&format!("#define ESP_VERSION_{name} {v}\n")),
            "{name} != {v}"
        );
    }
}

#[test]
fn options_and_errors() {
    let opts = esp_options_new();
    let set = |k: &str, v: &str| unsafe {
        esp_options_set(
            opts,
            CString::new(k).unwrap().as_ptr(),
            CString::new(v).unwrap().as_ptr(),
        )
    };
    assert_eq!(set("window", "2"), EspStatus::Ok);
    assert_eq!(set("window", "-1"), EspStatus::InvalidArgument);
    assert!(last_error().contains("window"), "{}", last_error());
    assert_eq!(set("colour", "blue"), EspStatus::InvalidArgument);
    assert!(last_error().contains("unknown option 'colour'"));
    assert_eq!(set("dark_field", "maybe"), EspStatus::InvalidArgument);
    assert_eq!(
        unsafe { esp_options_set(opts, ptr::null(), ptr::null()) },
        EspStatus::NullArgument
    );
    assert_eq!(
        unsafe { esp_engine_new(ptr::null(), ptr::null_mut()) },
        EspStatus::NullArgument
    );
    let mut engine = ptr::null_mut();
    assert_eq!(unsafe { esp_engine_new(opts, &mut engine) }, EspStatus::Ok);
    unsafe { esp_options_free(opts) };
    unsafe { esp_options_free(ptr::null_mut()) };
    // Bad shapes and values.
    let data = vec![1.0f32; 4 * 8 * 8];
    let mut dx = vec![0.0f32; 64];
    let out = dx_only(&mut dx);
    let rec = |n, h, w, stride, r: *const f32| unsafe {
        let len = if r.is_null() { 0 } else { data.len() };
        let rs = EspStack {
            data: r,
            len,
            n,
            height: h,
            width: w,
            row_stride: stride,
        };
        let ss = EspStack {
            data: data.as_ptr(),
            ..rs
        };
        esp_engine_reconstruct(engine, &rs, &ss, &out)
    };
    assert_eq!(rec(0, 8, 8, 0, data.as_ptr()), EspStatus::InvalidArgument);
    assert_eq!(rec(4, 8, 8, 4, data.as_ptr()), EspStatus::InvalidArgument);
    assert!(last_error().contains("stride"));
    assert_eq!(rec(4, 8, 8, 0, ptr::null()), EspStatus::NullArgument);
    assert_eq!(
        rec(usize::MAX, usize::MAX, 8, 0, data.as_ptr()),
        EspStatus::InvalidArgument
    );
    assert!(last_error().contains("overflow"), "{}", last_error());
    // A buffer shorter than its dimensions, and one that is not aligned.
    assert_eq!(rec(5, 8, 8, 0, data.as_ptr()), EspStatus::InvalidArgument);
    assert!(
        last_error().contains("'reference' holds 256 floats, needs 320"),
        "{}",
        last_error()
    );
    let odd = unsafe { data.as_ptr().cast::<u8>().add(1).cast::<f32>() };
    assert_eq!(rec(3, 8, 8, 0, odd), EspStatus::InvalidArgument);
    assert!(last_error().contains("aligned"), "{}", last_error());
    // An output buffer shorter than an image.
    let mut short = [0.0f32; 63];
    let st = stack(&data, 4, 8, 8);
    assert_eq!(
        unsafe { esp_engine_reconstruct(engine, &st, &st, &dx_only(&mut short)) },
        EspStatus::InvalidArgument
    );
    assert!(
        last_error().contains("'dx' holds 63 floats"),
        "{}",
        last_error()
    );
    // 8x8 is too small for window 2 and max shift 8.
    assert_eq!(rec(4, 8, 8, 0, data.as_ptr()), EspStatus::InvalidArgument);
    let mut nan = data.clone();
    nan[5] = f32::NAN;
    assert_eq!(rec(4, 8, 8, 0, nan.as_ptr()), EspStatus::NonFinite);
    assert!(
        last_error().contains("reference stack holds 1 non-finite"),
        "{}",
        last_error()
    );
    unsafe { esp_engine_free(engine) };
    unsafe { esp_engine_free(ptr::null_mut()) };
    assert_eq!(
        unsafe { CStr::from_ptr(esp_status_str(EspStatus::Panic as i32)) }
            .to_str()
            .unwrap(),
        "internal error (panic)"
    );
    assert_eq!(
        unsafe { CStr::from_ptr(esp_status_str(13)) }.to_bytes(),
        b"unknown status"
    );
}

#[test]
fn reconstruct_through_the_abi_from_eight_threads() {
    let case = simulate(&Preset::MaskDiagonal.config(96, 10, 3)).unwrap();
    let (n, h, w) = case.reference.dim();
    let opts = esp_options_new();
    unsafe { esp_options_set(opts, c"engine".as_ptr(), c"tracking".as_ptr()) };
    unsafe { esp_options_set(opts, c"max_shift".as_ptr(), c"9".as_ptr()) };
    let mut engine = ptr::null_mut();
    assert_eq!(unsafe { esp_engine_new(opts, &mut engine) }, EspStatus::Ok);
    unsafe { esp_options_free(opts) };
    let engine = engine as usize; // shared by all threads
    let results: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (r, smp) = (
                    case.reference.as_slice().unwrap(),
                    case.sample.as_slice().unwrap(),
                );
                s.spawn(move || {
                    let mut dx = vec![0.0f32; h * w];
                    let out = dx_only(&mut dx);
                    let st = unsafe {
                        esp_engine_reconstruct(
                            engine as *const EspEngine,
                            &stack(r, n, h, w),
                            &stack(smp, n, h, w),
                            &out,
                        )
                    };
                    assert_eq!(st, EspStatus::Ok, "{}", last_error());
                    dx
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    unsafe { esp_engine_free(engine as *mut EspEngine) };
    // Bit-for-bit (NaN borders included): the engine is deterministic under concurrency.
    let bits = |v: &Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(
        results.windows(2).all(|p| bits(&p[0]) == bits(&p[1])),
        "threads must agree"
    );
    // The ABI returns exactly what the Rust API returns (whose accuracy against ground truth
    // is asserted in tests/tracking.rs): this catches stride, layout and option mix-ups.
    let mut params = espinnet::tracking::Params::default();
    params.max_shift = 9;
    let direct =
        espinnet::tracking::track(case.reference.view(), case.sample.view(), &params).unwrap();
    assert_eq!(
        bits(&results[0]),
        bits(&direct.dx.iter().cloned().collect())
    );
    assert!(
        direct.dx.iter().filter(|v| v.is_finite()).count() > 3000,
        "an interior was estimated"
    );
}

#[test]
fn integrate_through_the_abi() {
    let (h, w) = (32, 40);
    let gx = vec![0.5f32; h * w];
    let gy = vec![-0.25f32; h * w];
    let mut phase = vec![0.0f32; h * w];
    assert_eq!(
        unsafe {
            esp_integrate(
                gx.as_ptr(),
                gy.as_ptr(),
                h * w,
                h,
                w,
                c"least-squares".as_ptr(),
                phase.as_mut_ptr(),
            )
        },
        EspStatus::Ok
    );
    // A plane: φ(0, 1) − φ(0, 0) = 0.5, φ(1, 0) − φ(0, 0) = −0.25.
    assert!((phase[1] - phase[0] - 0.5).abs() < 1e-4 && (phase[w] - phase[0] + 0.25).abs() < 1e-4);
    let len = h * w;
    assert_eq!(
        unsafe {
            esp_integrate(
                gx.as_ptr(),
                gy.as_ptr(),
                len,
                h,
                w,
                c"magic".as_ptr(),
                phase.as_mut_ptr(),
            )
        },
        EspStatus::InvalidArgument
    );
    assert_eq!(
        unsafe {
            esp_integrate(
                gx.as_ptr(),
                gy.as_ptr(),
                len,
                h,
                w,
                ptr::null(),
                ptr::null_mut(),
            )
        },
        EspStatus::NullArgument
    );
    assert_eq!(
        unsafe {
            esp_integrate(
                gx.as_ptr(),
                gy.as_ptr(),
                len - 1,
                h,
                w,
                ptr::null(),
                phase.as_mut_ptr(),
            )
        },
        EspStatus::InvalidArgument
    );
}

#[test]
fn the_network_engine_through_the_abi() {
    let case = simulate(&Preset::MaskDiagonal.config(80, 6, 5)).unwrap();
    let (n, h, w) = case.reference.dim();
    let opts = esp_options_new();
    let set = |k: &std::ffi::CStr, v: &std::ffi::CStr| unsafe {
        esp_options_set(opts, k.as_ptr(), v.as_ptr())
    };
    assert_eq!(set(c"provider", c"warp-drive"), EspStatus::InvalidArgument);
    assert!(last_error().contains("provider must be auto, cpu, cuda or tensorrt"));
    assert_eq!(set(c"engine", c"magic"), EspStatus::InvalidArgument);

    // Failures at engine creation carry their own status.
    let mut engine = ptr::null_mut();
    assert_eq!(set(c"model", c"/nonexistent/model.onnx"), EspStatus::Ok);
    assert_eq!(
        unsafe { esp_engine_new(opts, &mut engine) },
        EspStatus::Model
    );
    assert!(
        last_error().contains("/nonexistent/model.onnx"),
        "{}",
        last_error()
    );
    assert!(engine.is_null());
    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/espinnet-light.onnx");
    let shipped = std::ffi::CString::new(shipped.to_str().unwrap()).unwrap();
    assert_eq!(set(c"model", &shipped), EspStatus::Ok);
    assert_eq!(set(c"provider", c"cuda"), EspStatus::Ok);
    let st = unsafe { esp_engine_new(opts, &mut engine) };
    if st == EspStatus::Ok {
        eprintln!("CUDA provider available: ABI GPU path exercised");
        unsafe { esp_engine_free(engine) };
    } else {
        assert_eq!(st, EspStatus::ProviderUnavailable, "{}", last_error());
        eprintln!("SKIPPED (GPU): {}", last_error());
    }

    assert_eq!(set(c"provider", c"cpu"), EspStatus::Ok);
    let mut engine = ptr::null_mut();
    assert_eq!(
        unsafe { esp_engine_new(opts, &mut engine) },
        EspStatus::Ok,
        "{}",
        last_error()
    );
    unsafe { esp_options_free(opts) };
    let provider = unsafe { std::ffi::CStr::from_ptr(esp_engine_provider(engine)) };
    assert_eq!(provider.to_str().unwrap(), "cpu");
    let mut dx = vec![0.0f32; h * w];
    let mut status = vec![u8::MAX; h * w];
    let out = EspOutputs {
        status: status.as_mut_ptr(),
        ..dx_only(&mut dx)
    };
    let (r, smp) = (
        case.reference.as_slice().unwrap(),
        case.sample.as_slice().unwrap(),
    );
    let (r, smp) = (stack(r, n, h, w), stack(smp, n, h, w));
    let mut report = EspReport::default();
    let run = |out: &EspOutputs, report: &mut EspReport| unsafe {
        esp_engine_run(engine, &r, &smp, out, None, ptr::null_mut(), report)
    };
    assert_eq!(run(&out, &mut report), EspStatus::Ok, "{}", last_error());
    // A status map shorter than an image.
    let mut short = [0u8; 63];
    let out_short = EspOutputs {
        len: 63,
        dx: ptr::null_mut(),
        status: short.as_mut_ptr(),
        ..out
    };
    assert_eq!(
        run(&out_short, &mut EspReport::default()),
        EspStatus::InvalidArgument
    );
    assert!(
        last_error().contains("'status' holds 63 bytes"),
        "{}",
        last_error()
    );
    unsafe { esp_engine_free(engine) };
    // Exactly what the Rust API's Engine returns (whose accuracy tests/network.rs and
    // tests/guard.rs assert).
    let mut options = espinnet::Options::default();
    options.set("provider", "cpu").unwrap();
    let direct = espinnet::Engine::new(&options)
        .unwrap()
        .reconstruct(case.reference.view(), case.sample.view())
        .unwrap();
    let max = dx
        .iter()
        .zip(direct.dx.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(max <= 1e-5, "ABI vs Rust API: {max}");
    // The status map, and the report's count of its resolved pixels.
    assert_eq!(status, direct.status.as_slice().unwrap());
    let resolved = status
        .iter()
        .filter(|&&s| s == EspPixel::Resolved as u8)
        .count();
    assert!(resolved > 0);
    assert_eq!(report.resolved_pixels, resolved);
    for (&s, &d) in status.iter().zip(&dx) {
        assert_eq!(
            s == EspPixel::NotMeasured as u8,
            d.is_nan(),
            "status {s}, dx {d}"
        );
    }
}

/// Progress callback for the test: counts reports, records the last fraction, and cancels
/// once `cancel_after` reports have come (0: never).
struct Watch {
    reports: std::sync::atomic::AtomicUsize,
    last: std::sync::Mutex<f64>,
    cancel_after: usize,
}

unsafe extern "C" fn watch(fraction: f64, user: *mut std::ffi::c_void) -> i32 {
    let w = unsafe { &*(user as *const Watch) };
    let k = w.reports.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    *w.last.lock().unwrap() = fraction;
    i32::from(w.cancel_after != 0 && k >= w.cancel_after)
}

#[test]
fn progress_reaches_one_and_a_callback_can_cancel_either_engine() {
    let case = simulate(&Preset::MaskDiagonal.config(160, 6, 2)).unwrap();
    let (n, h, w) = case.reference.dim();
    // Small tiles for the network: several progress units on a small image.
    let small_tiles: &[(&std::ffi::CStr, &std::ffi::CStr)] =
        &[(c"tile", c"64"), (c"overlap", c"16")];
    for (engine, extra) in [(c"tracking", &[][..]), (c"network", small_tiles)] {
        let opts = esp_options_new();
        unsafe { esp_options_set(opts, c"engine".as_ptr(), engine.as_ptr()) };
        for (k, v) in extra {
            assert_eq!(
                unsafe { esp_options_set(opts, k.as_ptr(), v.as_ptr()) },
                EspStatus::Ok
            );
        }
        let mut e = ptr::null_mut();
        assert_eq!(
            unsafe { esp_engine_new(opts, &mut e) },
            EspStatus::Ok,
            "{}",
            last_error()
        );
        unsafe { esp_options_free(opts) };
        let mut dx = vec![0.0f32; h * w];
        let out = dx_only(&mut dx);
        let run = |cancel_after: usize| {
            let wt = Watch {
                reports: 0.into(),
                last: 0.0.into(),
                cancel_after,
            };
            let st = unsafe {
                esp_engine_reconstruct_with_progress(
                    e,
                    &stack(case.reference.as_slice().unwrap(), n, h, w),
                    &stack(case.sample.as_slice().unwrap(), n, h, w),
                    &out,
                    Some(watch),
                    &wt as *const Watch as *mut _,
                )
            };
            (st, wt.reports.into_inner(), *wt.last.lock().unwrap())
        };
        let (st, reports, last) = run(0);
        assert_eq!(st, EspStatus::Ok, "{engine:?}: {}", last_error());
        assert!(
            reports >= 3 && last == 1.0,
            "{engine:?}: {reports} reports, last {last}"
        );
        let (st, _, last) = run(1);
        assert_eq!(st, EspStatus::Cancelled, "{engine:?}");
        assert!(last < 1.0, "{engine:?} stopped early");
        assert_eq!(last_error(), "cancelled");
        unsafe { esp_engine_free(e) };
    }
}
