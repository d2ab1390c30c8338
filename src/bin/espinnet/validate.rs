//! `espinnet validate`: both engines against simulated truth on a fixed set of cases, the
//! table of the model card. Cases are the dataset generator's (`--mix`), at the scan
//! counts asked for; the tracker is run at each window and its best (lowest RMSE) reported.

use espinnet::Result;
use espinnet::network::Network;
use espinnet::simulate::dataset::{Mix, config};
use espinnet::simulate::simulate;
use espinnet::tracking::{Params, track};
use indicatif::ProgressBar;
use ndarray::{Array2, s};
use serde_json::json;

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// Cases per scan count.
    #[arg(long, default_value_t = 16)]
    count: u64,
    /// Image size (px).
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Scan counts.
    #[arg(long, value_delimiter = ',', default_values_t = [3, 5, 10, 20])]
    scans: Vec<usize>,
    /// Case distribution: paper or broad.
    #[arg(long, default_value = "paper")]
    mix: Mix,
    /// Seed of the case set (the training data uses others).
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Tracker windows Nw to try.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 3])]
    windows: Vec<usize>,
    /// Tracker search range (px).
    #[arg(long, default_value_t = 9)]
    max_shift: usize,
    #[command(flatten)]
    network: crate::reconstruct::NetworkArgs,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// Squared-error sums over the scored region.
#[derive(Default, Clone, Copy)]
struct Sums {
    d2: f64,
    gross: f64,
    t2: f64,
    dk2: f64,
    n: f64,
}

impl Sums {
    fn add(&mut self, maps: [&Array2<f32>; 4], truth: [&Array2<f32>; 4], border: usize) {
        let (h, w) = maps[0].dim();
        let r = s![border..h - border, border..w - border];
        let v = |a: &Array2<f32>| a.slice(r).iter().copied().collect::<Vec<f32>>();
        let (m, t): (Vec<_>, Vec<_>) = (maps.map(v).to_vec(), truth.map(v).to_vec());
        for i in 0..m[0].len() {
            let e = ((m[0][i] - t[0][i]) as f64).powi(2) + ((m[1][i] - t[1][i]) as f64).powi(2);
            // NaN (no estimate) counts as a gross error and stays out of the RMSE.
            if e.is_finite() {
                self.d2 += e;
            }
            self.gross += f64::from(u8::from(e.is_nan() || e > 1.0));
            self.t2 += ((m[2][i] - t[2][i]) as f64).powi(2).min(1e6);
            self.dk2 += ((m[3][i] - t[3][i]) as f64).powi(2).min(1e6);
            self.n += 1.0;
        }
    }

    fn row(&self) -> [f64; 4] {
        let n = self.n.max(1.0);
        [
            (self.d2 / n / 2.0).sqrt(),
            100.0 * self.gross / n,
            (self.t2 / n).sqrt(),
            (self.dk2 / n).sqrt(),
        ]
    }
}

pub fn run(a: &ValidateArgs) -> Result<()> {
    let net = Network::new(&a.network.options())?;
    let border = a.max_shift + a.windows.iter().max().copied().unwrap_or(1) + 2;
    let bar = ProgressBar::new(a.count * a.scans.len() as u64);
    let mut rows = Vec::new();
    for &n in &a.scans {
        let mut network = Sums::default();
        let mut tracking = vec![Sums::default(); a.windows.len()];
        for i in 0..a.count {
            let mut c = config(a.mix, a.size, a.seed, i);
            c.scans = n;
            let case = simulate(&c)?;
            let t = &case.truth;
            let truth = [&t.dx, &t.dy, &t.transmission, &t.darkfield];
            let o = net.reconstruct(case.reference.view(), case.sample.view())?;
            network.add([&o.dx, &o.dy, &o.transmission, &o.darkfield], truth, border);
            for (sums, &nw) in tracking.iter_mut().zip(&a.windows) {
                let p = Params {
                    window: nw,
                    max_shift: a.max_shift,
                    ..Default::default()
                };
                let o = track(case.reference.view(), case.sample.view(), &p)?;
                sums.add([&o.dx, &o.dy, &o.transmission, &o.darkfield], truth, border);
            }
            bar.inc(1);
        }
        let (best, tsums) = a
            .windows
            .iter()
            .zip(&tracking)
            .min_by(|x, y| x.1.row()[0].total_cmp(&y.1.row()[0]))
            .expect("at least one window");
        rows.push((n, network.row(), *best, tsums.row()));
    }
    bar.finish_and_clear();
    if a.json {
        for (n, net_row, nw, trk) in &rows {
            println!(
                "{}",
                json!({ "scans": n, "network": { "rmse_px": net_row[0], "gross_percent": net_row[1], "rmse_t": net_row[2], "rmse_d": net_row[3] },
                        "tracking": { "window": nw, "rmse_px": trk[0], "gross_percent": trk[1], "rmse_t": trk[2], "rmse_d": trk[3] } })
            );
        }
        return Ok(());
    }
    println!(
        "{} cases of {}² per N ({:?} mix, seed {}), scored over the interior (border {border} px); model {} step {:?}",
        a.count,
        a.size,
        a.mix,
        a.seed,
        net.info().source.display(),
        net.info().training_step
    );
    println!(
        "| N | network RMSE px | network >1 px % | network T | network D | tracker Nw | tracker RMSE px | tracker >1 px % | tracker T | tracker D |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (n, r, nw, t) in rows {
        println!(
            "| {n} | {:.3} | {:.2} | {:.4} | {:.4} | {nw} | {:.3} | {:.2} | {:.4} | {:.4} |",
            r[0], r[1], r[2], r[3], t[0], t[1], t[2], t[3]
        );
    }
    Ok(())
}
