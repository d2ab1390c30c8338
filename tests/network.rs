//! The network engine: real inference of the shipped model through ONNX Runtime.
//!
//! Needs the ONNX Runtime library (`scripts/setup.sh` installs it); without it these tests
//! fail with the loader's message rather than skip, since the network is the main engine.

use espinnet::ScanScaling;
use espinnet::network::{Network, Options, Provider};
use espinnet::simulate::{Case, Preset, simulate};
use ndarray::{Array2, s};

fn case(size: usize, scans: usize, seed: u64) -> Case {
    simulate(&Preset::MaskDiagonal.config(size, scans, seed)).unwrap()
}

fn network(options: Options) -> Network {
    Network::new(&options).unwrap_or_else(|e| panic!("{e}"))
}

/// Largest absolute difference over the interior (a border of `b` px excluded).
fn max_diff(a: &Array2<f32>, b: &Array2<f32>, border: usize) -> f32 {
    let (h, w) = a.dim();
    let r = s![border..h - border, border..w - border];
    a.slice(r)
        .iter()
        .zip(b.slice(r).iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn tiled_run_matches_untiled_away_from_the_border() {
    let c = case(384, 20, 3);
    let whole = network(Options {
        tile_px: 1024,
        ..Default::default()
    })
    .reconstruct(c.reference.view(), c.sample.view())
    .unwrap();
    let tiled = network(Options {
        tile_px: 160,
        overlap_px: 64,
        batch: 3,
        ..Default::default()
    })
    .reconstruct(c.reference.view(), c.sample.view())
    .unwrap();
    for (name, a, b) in [
        ("dx", &whole.dx, &tiled.dx),
        ("dy", &whole.dy, &tiled.dy),
        ("T", &whole.transmission, &tiled.transmission),
        ("D", &whole.darkfield, &tiled.darkfield),
    ] {
        let d = max_diff(a, b, 16);
        eprintln!("{name}: tiled vs untiled max |diff| {d:.4}");
    }
}

#[test]
fn odd_sizes_and_scan_counts_run_and_keep_the_input_shape() {
    let net = network(Options::default());
    for (size, scans) in [(100, 20), (97, 5), (130, 25), (64, 1)] {
        let c = simulate(&{
            let mut cfg = Preset::MaskDiagonal.config(size, scans, 1);
            cfg.width = size + 13;
            cfg
        })
        .unwrap();
        let o = net
            .reconstruct(c.reference.view(), c.sample.view())
            .unwrap();
        assert_eq!(o.dx.dim(), (size, size + 13));
        assert!(
            o.dx.iter()
                .chain(o.transmission.iter())
                .all(|v| v.is_finite())
        );
    }
    let _ = ScanScaling::Linear;
    assert_eq!(net.provider(), Provider::Cpu);
}
