//! Beam and detector geometry, and the conversions between the three ways of stating the
//! same measurement: pattern displacement (pixels), refraction angle (radians) and phase
//! gradient (radians per pixel). Conventions: `docs/design.md` §1.
//!
//! With effective pixel size `p` (detector pixel / magnification, metres at the sample
//! plane), sample–detector distance `z` (m) and wavelength `λ` (m):
//!
//! ```text
//! α = d · p / z                 (rad)
//! ∂φ/∂x = (2π / λ) · α · p      (rad per pixel)
//! d = z · λ / (2π · p²) · ∂φ/∂x (px)
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Result, require_positive};

/// h·c in eV·m: `λ[m] = HC_EV_M / E[eV]`.
pub const HC_EV_M: f64 = 1.239_841_98e-6;

/// Photon wavelength (m) for a photon energy (eV).
pub fn wavelength_m(energy_ev: f64) -> f64 {
    HC_EV_M / energy_ev
}

/// Photon energy (eV) for a wavelength (m).
pub fn energy_ev(wavelength_m: f64) -> f64 {
    HC_EV_M / wavelength_m
}

/// The imaging geometry needed to turn displacements into angles and phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    /// Photon energy (eV).
    pub energy_ev: f64,
    /// Sample-to-detector distance (m).
    pub distance_m: f64,
    /// Detector pixel size (m).
    pub detector_pixel_m: f64,
    /// Geometric magnification of the sample onto the detector (1 for a parallel beam).
    pub magnification: f64,
}

impl Geometry {
    /// A validated geometry: every quantity finite and > 0.
    pub fn new(
        energy_ev: f64,
        distance_m: f64,
        detector_pixel_m: f64,
        magnification: f64,
    ) -> Result<Self> {
        let g = Geometry {
            energy_ev,
            distance_m,
            detector_pixel_m,
            magnification,
        };
        g.validate()?;
        Ok(g)
    }

    /// [`Geometry::new`] from the units of the beamline and of the option names:
    /// energy in keV, distance in m, detector pixel in µm.
    pub fn from_kev_um(
        energy_kev: f64,
        distance_m: f64,
        detector_pixel_um: f64,
        magnification: f64,
    ) -> Result<Self> {
        Self::new(
            energy_kev * 1e3,
            distance_m,
            detector_pixel_um * 1e-6,
            magnification,
        )
    }

    /// Checks that every quantity is finite and > 0.
    pub fn validate(&self) -> Result<()> {
        require_positive("energy (eV)", self.energy_ev)?;
        require_positive("sample-detector distance (m)", self.distance_m)?;
        require_positive("detector pixel size (m)", self.detector_pixel_m)?;
        require_positive("magnification", self.magnification)
    }

    /// Wavelength (m).
    pub fn wavelength_m(&self) -> f64 {
        wavelength_m(self.energy_ev)
    }

    /// Pixel size at the sample plane (m): detector pixel / magnification.
    pub fn effective_pixel_m(&self) -> f64 {
        self.detector_pixel_m / self.magnification
    }

    /// Refraction angle (rad) for a pattern displacement (px).
    pub fn angle_rad(&self, displacement_px: f64) -> f64 {
        displacement_px * self.effective_pixel_m() / self.distance_m
    }

    /// Pattern displacement (px) for a refraction angle (rad).
    pub fn displacement_px(&self, angle_rad: f64) -> f64 {
        angle_rad * self.distance_m / self.effective_pixel_m()
    }

    /// Phase gradient (rad per pixel) for a refraction angle (rad).
    pub fn phase_gradient(&self, angle_rad: f64) -> f64 {
        2.0 * std::f64::consts::PI / self.wavelength_m() * angle_rad * self.effective_pixel_m()
    }

    /// Refraction angle (rad) for a phase gradient (rad per pixel).
    pub fn angle_from_phase_gradient(&self, gradient_rad_per_px: f64) -> f64 {
        gradient_rad_per_px * self.wavelength_m()
            / (2.0 * std::f64::consts::PI * self.effective_pixel_m())
    }

    /// Phase gradient (rad per pixel) per pixel of displacement: `2π·p² / (λ·z)`.
    pub fn phase_gradient_per_px(&self) -> f64 {
        self.phase_gradient(self.angle_rad(1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    fn geometry() -> Geometry {
        // 20 keV, 0.5 m, 6.5 µm detector pixels behind a 10x objective.
        Geometry::new(20e3, 0.5, 6.5e-6, 10.0).unwrap()
    }

    #[test]
    fn wavelength_by_hand() {
        // 1.23984198e-6 / 14000 = 8.85601414e-11 m = 0.08856 nm.
        assert_relative_eq!(wavelength_m(14e3), 8.856_014_14e-11, max_relative = 1e-8);
        assert_relative_eq!(wavelength_m(1e3), 1.239_841_98e-9, max_relative = 1e-12);
        assert_relative_eq!(
            energy_ev(wavelength_m(17.5e3)),
            17.5e3,
            max_relative = 1e-12
        );
    }

    #[test]
    fn conversions_by_hand() {
        let g = geometry();
        assert_relative_eq!(g.effective_pixel_m(), 0.65e-6, max_relative = 1e-12);
        // α = 1 px · 0.65 µm / 0.5 m = 1.3 µrad.
        assert_relative_eq!(g.angle_rad(1.0), 1.3e-6, max_relative = 1e-12);
        // ∂φ/∂x = 2π / 6.19921e-11 m · 1.3e-6 · 0.65e-6 m = 0.0856446 rad/px.
        let lambda = 1.239_841_98e-6 / 20e3;
        let by_hand = 2.0 * std::f64::consts::PI / lambda * 1.3e-6 * 0.65e-6;
        assert_relative_eq!(g.phase_gradient(1.3e-6), by_hand, max_relative = 1e-12);
        assert_relative_eq!(by_hand, 0.085_644_6, max_relative = 1e-5);
        assert_relative_eq!(g.phase_gradient_per_px(), by_hand, max_relative = 1e-12);
    }

    #[test]
    fn round_trips() {
        let g = geometry();
        for d in [-7.25, 0.0, 0.5, 12.0] {
            let a = g.angle_rad(d);
            assert_relative_eq!(g.displacement_px(a), d, epsilon = 1e-12);
            let grad = g.phase_gradient(a);
            assert_relative_eq!(g.angle_from_phase_gradient(grad), a, epsilon = 1e-18);
        }
    }

    #[test]
    fn rejects_nonphysical() {
        assert!(Geometry::new(0.0, 0.5, 1e-6, 1.0).is_err());
        assert!(Geometry::new(20e3, -1.0, 1e-6, 1.0).is_err());
        assert!(Geometry::new(20e3, 0.5, f64::NAN, 1.0).is_err());
        let msg = Geometry::new(20e3, 0.5, 1e-6, 0.0).unwrap_err().to_string();
        assert!(msg.contains("magnification"), "{msg}");
    }
}
