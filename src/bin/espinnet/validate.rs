//! `espinnet validate`: both engines against simulated truth on a fixed set of cases, the
//! tables of the model card. Cases are the dataset generator's (`--mix paper|broad`), at
//! the scan counts asked for, or the fixed stress suite (`--mix stress`), one row per case;
//! the tracker is run at each window and its best (lowest RMSE) reported.

use espinnet::metrics::{Accuracy, Errors};
use espinnet::simulate::dataset::{Mix, config};
use espinnet::simulate::{Case, Preset, simulate, stress};
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
    /// Case distribution: paper, broad, or the fixed stress suite (stress; --count and
    /// --scans do not apply).
    #[arg(long, default_value = "paper")]
    mix: Mix,
    /// Seed of the case set (the training data uses others).
    #[arg(long, default_value_t = SEED)]
    seed: u64,
    /// Tracker windows Nw to try.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 3])]
    windows: Vec<usize>,
    /// Tracker search range (px) [default: 9; stress suite: each case's max |d| + 2, at
    /// most 12].
    #[arg(long)]
    max_shift: Option<usize>,
    #[command(flatten)]
    network: crate::reconstruct::NetworkArgs,
    /// Stress suite: only the cases whose name contains this text (e.g. "lens", "N 2").
    #[arg(long)]
    only: Option<String>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &ValidateArgs) -> Result<()> {
    let mut options = Options::default();
    options.network = a.network.options();
    options.network.image_px = Some((a.size, a.size));
    // Every mix is imaged with the presets' geometry: the phase is scored too.
    options.geometry = Some(Preset::MaskDiagonal.config(2, 1, 0).geometry);
    let network = Engine::new(&options)?;
    let net = network.network().expect("the network engine");
    let mut tracking = options.clone();
    tracking.engine = EngineKind::Tracking;
    let trackers = |max_shift: usize| {
        a.windows
            .iter()
            .map(|&nw| {
                let mut o = tracking.clone();
                o.tracking.window = nw;
                o.tracking.max_shift = max_shift;
                Engine::new(&o)
            })
            .collect::<Result<Vec<_>>>()
    };
    let widest = a.windows.iter().max().copied().unwrap_or(1);
    if a.mix == Mix::Stress {
        // The network without and with its guard, whatever the flags say.
        options.network.guard = !options.network.guard;
        let other = Engine::new(&options)?;
        let (raw, guarded) = match options.network.guard {
            true => (&network, &other),
            false => (&other, &network),
        };
        let border = a.max_shift.unwrap_or(STRESS_MAX_SHIFT_PX) + widest + 2;
        return run_stress(a, raw, guarded, &trackers, border);
    }
    let max_shift = a.max_shift.unwrap_or(9);
    let trackers = trackers(max_shift)?;
    let border = max_shift + widest + 2;
    let bar = ProgressBar::new(a.count * a.scans.len() as u64);
    let mut rows = Vec::new();
    for &n in &a.scans {
        let mut network_acc = Accuracy::default();
        let mut tracking = vec![Accuracy::default(); a.windows.len()];
        for i in 0..a.count {
            let mut c = config(a.mix, a.size, a.seed, i);
            c.scans = n;
            score(
                &simulate(&c)?,
                std::iter::once((&mut network_acc, &network))
                    .chain(tracking.iter_mut().zip(&trackers)),
                border,
            )?;
            bar.inc(1);
        }
        let (best, tracked) = best_window(&a.windows, &tracking);
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

/// The tracker's window with the lowest RMSE, and its errors.
fn best_window(windows: &[usize], tracking: &[Accuracy]) -> (usize, Errors) {
    windows
        .iter()
        .zip(tracking)
        .map(|(nw, acc)| (*nw, acc.errors()))
        .min_by(|x, y| x.1.rmse_px.total_cmp(&y.1.rmse_px))
        .expect("at least one window")
}

/// Adds `case`'s errors under each engine to its accumulator; returns the pixels each
/// engine's guard solved again.
fn score<'a>(
    case: &Case,
    engines: impl Iterator<Item = (&'a mut Accuracy, &'a Engine)>,
    border: usize,
) -> Result<Vec<usize>> {
    let truth = case.truth.contrasts();
    let (r, s) = (case.reference.view(), case.sample.view());
    let mut resolved = Vec::new();
    for (acc, engine) in engines {
        let maps = engine.reconstruct(r, s)?;
        acc.add(&maps.contrasts(), &truth, border)?;
        if let Some(phase) = &maps.phase {
            acc.add_phase(phase.view(), case.truth.phase.view(), border)?;
        }
        resolved.push(maps.report.resolved_pixels);
    }
    Ok(resolved)
}

/// One case of the stress table.
struct StressRow<'a> {
    case: &'a stress::StressCase,
    network: Errors,
    guarded: Errors,
    /// Share of the pixels the guard solved again.
    resolved_share: f64,
    /// The tracker's best window, and its errors there.
    window: usize,
    tracking: Errors,
}

impl StressRow<'_> {
    /// Issue 15's accuracy target for `errors` (the network's, with or without its guard):
    /// an inlier RMSE at or below the tracker's best window up to N = 5, within 1.2× of it
    /// from N = 10.
    fn rmse_target_met(&self, errors: &Errors) -> bool {
        let bound = match self.case.config.scans {
            ..=5 => 1.0,
            _ => 1.2,
        };
        errors.inlier_rmse_px <= bound * self.tracking.inlier_rmse_px
    }
}

/// The case sets' seed unless one is given (the model card's tables).
pub const SEED: u64 = 2026;

/// The stress suite's widest tracker search (px).
const STRESS_MAX_SHIFT_PX: usize = 12;

/// The stress suite's table: one row per case, the network without and with its guard, the
/// tracker at its best window per case; `trackers`: the tracker at each window for a search
/// range (px).
fn run_stress(
    a: &ValidateArgs,
    network: &Engine,
    guarded: &Engine,
    trackers: &dyn Fn(usize) -> Result<Vec<Engine>>,
    border: usize,
) -> Result<()> {
    let mut cases = stress::suite(a.size, a.seed);
    if let Some(only) = &a.only {
        cases.retain(|c| c.name.contains(only.as_str()));
    }
    let bar = ProgressBar::new(cases.len() as u64);
    let mut rows = Vec::new();
    for case in &cases {
        let mut network_acc = Accuracy::default();
        let mut guarded_acc = Accuracy::default();
        // As a user who knows the sample's strength sets it: the lenses reach 12 px, and a
        // range over half the checkerboard's period finds its repeats.
        let max_shift = a
            .max_shift
            .unwrap_or((case.max_displacement_px.ceil() as usize + 2).min(STRESS_MAX_SHIFT_PX));
        let trackers = trackers(max_shift)?;
        let mut tracking = vec![Accuracy::default(); trackers.len()];
        let resolved = score(
            &simulate(&case.config)?,
            [(&mut network_acc, network), (&mut guarded_acc, guarded)]
                .into_iter()
                .chain(tracking.iter_mut().zip(&trackers)),
            border,
        )?;
        let (window, tracking) = best_window(&a.windows, &tracking);
        rows.push(StressRow {
            case,
            network: network_acc.errors(),
            guarded: guarded_acc.errors(),
            resolved_share: resolved[1] as f64 / (a.size * a.size) as f64,
            window,
            tracking,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    if a.json {
        for r in &rows {
            println!(
                "{}",
                json!({ "case": r.case.name, "max_displacement_px": r.case.max_displacement_px,
                        "network": r.network,
                        "guarded": { "errors": r.guarded, "resolved_share": r.resolved_share },
                        "tracking": { "window": r.window, "errors": r.tracking },
                        "rmse_target_met": { "network": r.rmse_target_met(&r.network),
                                             "guarded": r.rmse_target_met(&r.guarded) } })
            );
        }
        return Ok(());
    }
    let model = network
        .network()
        .map_or("?".into(), |n| n.info().source.display().to_string());
    println!(
        "stress suite: {} cases of {}² (seed {}), scored over the interior (border {border} px); model {model}",
        rows.len(),
        a.size,
        a.seed,
    );
    println!(
        "| case | network >1 px % | inlier RMSE px | T | D | phase waves | guarded: re-solved % | >1 px % | inlier RMSE px | T | D | phase waves | tracker Nw | >1 px % | inlier RMSE px | T | D | phase waves |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let cells = |e: &Errors| {
        format!(
            "{:.2} | {:.3} | {:.4} | {:.4} | {:.4}",
            100.0 * e.gross_fraction,
            e.inlier_rmse_px,
            e.rmse_transmission,
            e.rmse_darkfield,
            e.phase_rms_waves.unwrap_or(f64::NAN)
        )
    };
    for r in &rows {
        println!(
            "| {} | {} | {:.2} | {} | {} | {} |",
            r.case.name,
            cells(&r.network),
            100.0 * r.resolved_share,
            cells(&r.guarded),
            r.window,
            cells(&r.tracking)
        );
    }
    // The target of every engine: at most 0.5 % gross wherever max |d| <= 10 px.
    let within: Vec<&StressRow> = rows
        .iter()
        .filter(|r| r.case.max_displacement_px <= 10.0)
        .collect();
    let failing = |errors: for<'r> fn(&'r StressRow<'_>) -> &'r Errors| {
        within
            .iter()
            .filter(|r| errors(r).gross_fraction > 0.005)
            .count()
    };
    println!(
        "cases with max |d| <= 10 px over 0.5 % gross: network {} of {n}, guarded {} of {n}, tracker {} of {n}",
        failing(|r| &r.network),
        failing(|r| &r.guarded),
        failing(|r| &r.tracking),
        n = within.len(),
    );
    let met = |errors: for<'r> fn(&'r StressRow<'_>) -> &'r Errors| {
        rows.iter().filter(|r| r.rmse_target_met(errors(r))).count()
    };
    println!(
        "cases with an inlier RMSE at or below the tracker's best window (N <= 5) or within 1.2x of it (N >= 10): \
         network {} of {n}, guarded {} of {n}",
        met(|r| &r.network),
        met(|r| &r.guarded),
        n = rows.len(),
    );
    Ok(())
}
