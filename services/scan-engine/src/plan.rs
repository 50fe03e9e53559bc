//! What a scan is asked to do, and the bounds that keep it polite and finite.

use url::Url;

/// Most target URLs one scan starts from.
pub const MAX_TARGETS: usize = 20;
/// Most pages one scan may fetch.
pub const MAX_PAGES: u32 = 10_000;
/// Deepest link depth one scan may follow.
pub const MAX_DEPTH: u32 = 50;
/// Slowest and fastest request rates, in requests per second.
pub const RATES: std::ops::RangeInclusive<f64> = 0.1..=100.0;

/// One scan's targets and limits.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanPlan {
    /// Where the crawl starts (depth 0); it stays within these URLs' origins.
    pub targets: Vec<Url>,
    /// Stop after this many responses other than redirects.
    pub max_pages: u32,
    /// Follow links at most this many steps from a target.
    pub max_depth: u32,
    /// At most this many requests per second (the targets are production apps).
    pub rate_per_second: f64,
}

impl Default for ScanPlan {
    fn default() -> ScanPlan {
        ScanPlan { targets: Vec::new(), max_pages: 100, max_depth: 5, rate_per_second: 10.0 }
    }
}

/// Why a plan cannot run.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("a scan needs at least one target URL")]
    NoTargets,
    #[error("at most {MAX_TARGETS} targets, not {0}")]
    TooManyTargets(usize),
    #[error("target {0}: only http:// and https:// URLs with a host can be scanned")]
    NotHttp(String),
    #[error("the page limit must be between 1 and {MAX_PAGES}, not {0}")]
    MaxPages(u32),
    #[error("the depth limit must be at most {MAX_DEPTH}, not {0}")]
    MaxDepth(u32),
    #[error("the rate must be between 0.1 and 100 requests a second, not {0}")]
    Rate(f64),
}

impl ScanPlan {
    /// Checks the plan against the bounds above; the first problem found is the error.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.targets.is_empty() {
            return Err(PlanError::NoTargets);
        }
        if self.targets.len() > MAX_TARGETS {
            return Err(PlanError::TooManyTargets(self.targets.len()));
        }
        if let Some(bad) = self
            .targets
            .iter()
            .find(|t| !matches!(t.scheme(), "http" | "https") || t.host_str().is_none())
        {
            return Err(PlanError::NotHttp(bad.to_string()));
        }
        if self.max_pages == 0 || self.max_pages > MAX_PAGES {
            return Err(PlanError::MaxPages(self.max_pages));
        }
        if self.max_depth > MAX_DEPTH {
            return Err(PlanError::MaxDepth(self.max_depth));
        }
        if !RATES.contains(&self.rate_per_second) {
            return Err(PlanError::Rate(self.rate_per_second));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(targets: &[&str]) -> ScanPlan {
        ScanPlan {
            targets: targets.iter().map(|t| Url::parse(t).unwrap()).collect(),
            ..ScanPlan::default()
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let p = ScanPlan::default();
        assert_eq!((p.max_pages, p.max_depth, p.rate_per_second), (100, 5, 10.0));
        assert!(p.targets.is_empty());
        assert_eq!(p.validate(), Err(PlanError::NoTargets));
        assert_eq!(plan(&["http://intranet/", "https://10.0.0.5:8443/app"]).validate(), Ok(()));
    }

    #[test]
    fn each_bound_has_a_clear_message() {
        let many: Vec<String> = (0..21).map(|i| format!("http://h{i}/")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(plan(&many).validate(), Err(PlanError::TooManyTargets(21)));
        let err = plan(&["ftp://files/"]).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "target ftp://files/: only http:// and https:// URLs with a host can be scanned"
        );
        let with = |f: fn(&mut ScanPlan)| {
            let mut p = plan(&["http://intranet/"]);
            f(&mut p);
            p.validate()
        };
        assert_eq!(with(|p| p.max_pages = 0), Err(PlanError::MaxPages(0)));
        assert_eq!(with(|p| p.max_pages = 10_001), Err(PlanError::MaxPages(10_001)));
        assert_eq!(with(|p| p.max_pages = 10_000), Ok(()));
        assert_eq!(with(|p| p.max_depth = 51), Err(PlanError::MaxDepth(51)));
        assert_eq!(with(|p| p.max_depth = 0), Ok(()));
        assert_eq!(with(|p| p.rate_per_second = 0.05), Err(PlanError::Rate(0.05)));
        assert_eq!(with(|p| p.rate_per_second = 100.5), Err(PlanError::Rate(100.5)));
        assert!(with(|p| p.rate_per_second = f64::NAN).is_err());
        assert_eq!(with(|p| p.rate_per_second = 0.1), Ok(()));
        assert_eq!(
            with(|p| p.max_depth = 99).unwrap_err().to_string(),
            "the depth limit must be at most 50, not 99"
        );
    }
}
