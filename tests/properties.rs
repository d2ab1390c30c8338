//! Property tests (proptest) of what every surface relies on before any engine runs: stack
//! validation, scan scaling, options by name and the geometry's unit conversions.

use espinnet::geometry::{energy_ev, wavelength_m};
use espinnet::stack::{mean_intensity, scan_weights, validate_pair};
use espinnet::{Error, Geometry, Options, ScanScaling};
use ndarray::Array3;
use proptest::prelude::*;

/// Any f32, NaN, infinities, zeros, denormals and extremes included, often enough.
fn any_value() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => 900.0f32..1100.0,
        1 => any::<f32>(),
        1 => prop::sample::select(vec![
            0.0, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e-40, f32::MAX, f32::MIN,
            1e30, 1e-30,
        ]),
    ]
}

fn stack() -> impl Strategy<Value = Array3<f32>> {
    (1usize..4, 1usize..6, 1usize..6).prop_flat_map(|(n, h, w)| {
        prop::collection::vec(any_value(), n * h * w)
            .prop_map(move |v| Array3::from_shape_vec((n, h, w), v).unwrap())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Accepted stacks are what the engines can normalise; every refusal says why, and a
    /// non-finite value is reported where it is.
    #[test]
    fn validation_accepts_exactly_measurable_pairs(r in stack(), s in stack()) {
        let finite = |a: &Array3<f32>| a.iter().all(|v| v.is_finite());
        match validate_pair(r.view(), s.view()) {
            Ok(()) => {
                prop_assert_eq!(r.dim(), s.dim());
                for a in [&r, &s] {
                    prop_assert!(finite(a));
                    // The mean the engines divide by.
                    let mean = mean_intensity(a.view());
                    prop_assert!(mean.abs() >= 1e-30 && mean.is_finite());
                    let lo = a.iter().copied().fold(f32::INFINITY, f32::min);
                    let hi = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    prop_assert!(hi > lo, "a constant stack was accepted");
                }
            }
            Err(Error::NonFinite { input, first, .. }) => {
                let a = if input.starts_with("reference") { &r } else { &s };
                prop_assert!(!a[[first[0], first[1], first[2]]].is_finite());
                // The reference is checked first.
                prop_assert!(input.starts_with("reference") || finite(&r));
            }
            Err(Error::ShapeMismatch { .. }) => {
                prop_assert!(finite(&r) && finite(&s));
                prop_assert_ne!(r.dim(), s.dim());
            }
            Err(Error::InvalidArgument(m)) => {
                prop_assert!(m.contains("nothing to measure") || m.contains("no pattern"), "{}", m);
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }

    /// Scaling N frames to the network's Nnet keeps the scan's ends and order.
    #[test]
    fn scan_weights_stay_within_the_scan(n in 1usize..64, target in 1usize..64, linear: bool) {
        let scaling = if linear { ScanScaling::Linear } else { ScanScaling::Nearest };
        let w = scan_weights(n, target, scaling).unwrap();
        prop_assert_eq!(w.len(), target);
        let mut last = 0.0f64;
        for &(i0, i1, f) in &w {
            prop_assert!(i0 < n && i1 < n && i0 <= i1 && (0.0..1.0).contains(&f));
            let position = i0 as f64 + f64::from(f) * (i1 - i0) as f64;
            prop_assert!(position + 1e-6 >= last, "positions go back");
            last = position;
        }
        prop_assert_eq!(w[0].0, 0);
        if n < target {
            prop_assert_eq!(w[target - 1].1, n - 1);
        }
    }

    /// Any key and value: a result, never a panic; a refused value changes nothing.
    #[test]
    fn options_by_name_never_panic_and_fail_atomically(
        key in prop::sample::select(vec![
            "engine", "threads", "tile", "overlap", "batch", "window", "max_shift",
            "mean_window", "dark_field", "energy_kev", "distance_m", "pixel_size_um",
            "magnification", "integration", "memory_limit_mib", "scaling", "provider", "colour",
        ]),
        value in prop_oneof![
            any::<u64>().prop_map(|v| v.to_string()),
            any::<f64>().prop_map(|v| v.to_string()),
            "[a-z0-9.-]{0,12}",
        ],
    ) {
        let mut o = Options::default();
        o.set("energy_kev", "20").unwrap();
        let before = format!("{o:?}");
        if o.set(key, &value).is_err() {
            prop_assert_eq!(format!("{o:?}"), before);
        }
    }

    /// Unit conversions invert each other across the range of real set-ups and beyond.
    #[test]
    fn geometry_conversions_invert(
        kev in 1e-3f64..1e4,
        distance_m in 1e-4f64..1e3,
        pixel_um in 1e-3f64..1e3,
        magnification in 1e-2f64..1e4,
        displacement_px in -1e3f64..1e3,
    ) {
        let g = Geometry::from_kev_um(kev, distance_m, pixel_um, magnification).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1e-300);
        prop_assert!(close(energy_ev(wavelength_m(g.energy_ev)), kev * 1e3));
        let angle = g.angle_rad(displacement_px);
        prop_assert!(close(g.displacement_px(angle), displacement_px));
        let gradient = g.phase_gradient(angle);
        prop_assert!(close(g.angle_from_phase_gradient(gradient), angle));
        let p = pixel_um * 1e-6 / magnification;
        let expected = 2.0 * std::f64::consts::PI * p * p / (g.wavelength_m() * distance_m);
        prop_assert!(close(g.phase_gradient_per_px(), expected));
        // The same geometry by name, as every surface gives it.
        let mut o = Options::default();
        for (k, v) in [("energy_kev", kev), ("distance_m", distance_m),
                       ("pixel_size_um", pixel_um), ("magnification", magnification)] {
            o.set(k, &v.to_string()).unwrap();
        }
        let named = o.geometry.unwrap();
        prop_assert!(close(named.energy_ev, g.energy_ev) && close(named.detector_pixel_m, g.detector_pixel_m));
    }

    /// Any quantity that is not finite and > 0 is refused.
    #[test]
    fn geometry_refuses_what_is_not_finite_and_positive(values in prop::array::uniform4(any::<f64>())) {
        let ok = values.iter().all(|v| v.is_finite() && *v > 0.0);
        prop_assert_eq!(Geometry::new(values[0], values[1], values[2], values[3]).is_ok(), ok);
    }
}
