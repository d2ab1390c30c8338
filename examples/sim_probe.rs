use espinnet::simulate::{Preset, simulate};
fn main() {
    for p in Preset::ALL {
        let c = p.config(512, 20, 1);
        let t = std::time::Instant::now();
        let case = simulate(&c).unwrap();
        let el = t.elapsed().as_secs_f64();
        let f = case.reference.index_axis(ndarray::Axis(0), 0);
        let m = f.mean().unwrap();
        let sd = (f.mapv(|v| (v - m).powi(2)).mean().unwrap()).sqrt();
        let dmax = case.truth.dx.iter().fold(0f32, |a, v| a.max(v.abs()));
        println!("{:16} {:.3}s mean {:.0} visibility {:.3} max|dx| {:.2} Tmin {:.2} Dmin {:.2}", p.name(), el, m, sd / m, dmax,
            case.truth.transmission.iter().cloned().fold(9f32, f32::min), case.truth.darkfield.iter().cloned().fold(9f32, f32::min));
    }
}
