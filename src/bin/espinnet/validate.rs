//! `espinnet validate`: both engines against simulated truth on a fixed set of cases, the
//! table of the model card. Cases are the dataset generator's (`--mix`), at the scan
//! counts asked for; the tracker is run at each window and its best (lowest RMSE) reported.

use espinnet::metrics::{Accuracy, Errors};
use espinnet::simulate::dataset::{Mix, config};
use espinnet::simulate::simulate;
use espinnet::{Engine, EngineKind, Options, Result};
use indicatif::ProgressBar;
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

pub fn run(a: &ValidateArgs) -> Result<()> {
    let mut options = Options::default();
    options.network = a.network.options();
    let network = Engine::new(&options)?;
    let net = network.network().expect("the network engine");
    let trackers = a
        .windows
        .iter()
        .map(|&nw| {
            let mut o = options.clone();
            o.engine = EngineKind::Tracking;
            o.tracking.window = nw;
            o.tracking.max_shift = a.max_shift;
            Engine::new(&o)
        })
        .collect::<Result<Vec<_>>>()?;
    let border = a.max_shift + a.windows.iter().max().copied().unwrap_or(1) + 2;
    let bar = ProgressBar::new(a.count * a.scans.len() as u64);
    let mut rows = Vec::new();
    for &n in &a.scans {
        let mut network_acc = Accuracy::default();
        let mut tracking = vec![Accuracy::default(); a.windows.len()];
        for i in 0..a.count {
            let mut c = config(a.mix, a.size, a.seed, i);
            c.scans = n;
            let case = simulate(&c)?;
            let truth = case.truth.contrasts();
            let (r, s) = (case.reference.view(), case.sample.view());
            for (acc, engine) in std::iter::once((&mut network_acc, &network))
                .chain(tracking.iter_mut().zip(&trackers))
            {
                let maps = engine.reconstruct(r, s)?;
                acc.add(&maps.contrasts(), &truth, border)?;
            }
            bar.inc(1);
        }
        let (best, tracked) = a
            .windows
            .iter()
            .zip(&tracking)
            .map(|(nw, acc)| (*nw, acc.errors()))
            .min_by(|x, y| x.1.rmse_px.total_cmp(&y.1.rmse_px))
            .expect("at least one window");
        rows.push((n, network_acc.errors(), best, tracked));
    }
    bar.finish_and_clear();
    if a.json {
        for (n, network, nw, tracking) in &rows {
            println!(
                "{}",
                json!({ "scans": n, "network": network, "tracking": { "window": nw, "errors": tracking } })
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
    let cells = |e: &Errors| {
        format!(
            "{:.3} | {:.2} | {:.4} | {:.4}",
            e.rmse_px,
            100.0 * e.gross_fraction,
            e.rmse_transmission,
            e.rmse_darkfield
        )
    };
    for (n, network, nw, tracking) in rows {
        println!(
            "| {n} | {} | {nw} | {} |",
            cells(&network),
            cells(&tracking)
        );
    }
    Ok(())
}
