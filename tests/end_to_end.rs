//! The whole chain on a known phase: simulate a refractive lens, track the pattern,
//! convert the displacement with the geometry and integrate. Every unit conversion
//! (µm, keV, metres, pixels, radians) is on this path.

use espinnet::integrate::{Method, phase_from_displacement};
use espinnet::simulate::{Preset, simulate};
use espinnet::tracking::{Params, track};
use ndarray::s;

#[test]
fn lens_phase_is_recovered_from_the_tracked_displacement() {
    let mut config = Preset::Lens.config(192, 10, 5);
    // A stronger lens than the preset (apex 20 µm): up to ~3 px of displacement.
    if let espinnet::simulate::Sample::Lens { apex_radius_um, .. } = &mut config.sample {
        *apex_radius_um = 20.0;
    }
    let case = simulate(&config).unwrap();
    let p = {
        let mut o = Params::default();
        o.window = 1;
        o.max_shift = 5;
        o
    };
    let out = track(case.reference.view(), case.sample.view(), &p).unwrap();
    let b = p.border();
    // Integrate only the valid interior, where every pixel has an estimate.
    let inner = s![b..192 - b, b..192 - b];
    let phase = phase_from_displacement(
        out.dx.slice(inner),
        out.dy.slice(inner),
        &config.geometry,
        Method::LeastSquares,
    )
    .unwrap();
    let truth = case.truth.phase.slice(inner).to_owned();
    let truth = &truth - truth.mean().unwrap();
    let range = truth.iter().cloned().fold(f32::MIN, f32::max)
        - truth.iter().cloned().fold(f32::MAX, f32::min);
    let rms = (&phase - &truth).mapv(|v| v * v).mean().unwrap().sqrt();
    eprintln!(
        "lens phase: range {range:.3} rad, RMS error {rms:.4} rad ({:.2} %)",
        100.0 * rms / range
    );
    assert!(
        range > 1.0,
        "the lens must produce a measurable phase, got {range} rad"
    );
    // White tracking noise (~0.06 px → 0.005 rad/px of gradient) integrates by least squares
    // to ~0.007 rad; the aperture edge, where d jumps by ~3 px, adds a systematic part.
    // Measured 0.026 rad (0.24 %); the bound, 1 % of the range, flags any unit slip.
    assert!(
        rms < 0.01 * range,
        "RMS phase error {rms} rad over a range of {range} rad"
    );
}
