//! Small dense linear solves of the fits' normal equations.

/// Solves `a·x = b` over its first `m` rows and columns (Gauss–Jordan, partial pivoting),
/// `None` where it is singular.
pub(super) fn solve<const M: usize>(
    mut a: [[f64; M]; M],
    mut b: [f64; M],
    m: usize,
) -> Option<[f64; M]> {
    let scale = (0..m).fold(0.0f64, |s, i| s.max(a[i][i].abs()));
    for c in 0..m {
        let pivot = (c..m).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        a.swap(c, pivot);
        b.swap(c, pivot);
        let diagonal = a[c][c];
        // Also refuses NaN.
        if diagonal.abs().partial_cmp(&(1e-12 * scale)) != Some(std::cmp::Ordering::Greater) {
            return None;
        }
        let (row, bc) = (a[c], b[c]);
        for r in (0..m).filter(|&r| r != c) {
            let f = a[r][c] / diagonal;
            a[r].iter_mut()
                .zip(&row)
                .skip(c)
                .for_each(|(v, &p)| *v -= f * p);
            b[r] -= f * bc;
        }
    }
    let mut x = [0.0; M];
    for i in 0..m {
        x[i] = b[i] / a[i][i];
    }
    Some(x)
}
