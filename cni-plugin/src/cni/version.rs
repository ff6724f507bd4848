//! Spec versions this plugin speaks.

/// Supported CNI spec versions, oldest first.
pub const SUPPORTED: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];

/// The newest supported version, used when the request names none.
pub const LATEST: &str = "1.1.0";

/// A parsed spec version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u16, pub u16, pub u16);

impl Version {
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('.').map(|p| p.parse::<u16>().ok());
        let v = Version(it.next()??, it.next()??, it.next()??);
        it.next().is_none().then_some(v)
    }

    pub fn supported(s: &str) -> bool {
        SUPPORTED.contains(&s)
    }

    /// 1.0.0 and later dropped the per-IP `version` field.
    pub fn has_ip_version_field(self) -> bool {
        self < Version(1, 0, 0)
    }

    /// `GC` and `STATUS` exist from 1.1.0 on; so does `mtu` on interfaces.
    pub fn at_least_1_1(self) -> bool {
        self >= Version(1, 1, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_order() {
        assert_eq!(Version::parse("1.0.0"), Some(Version(1, 0, 0)));
        assert_eq!(Version::parse("1.0"), None);
        assert_eq!(Version::parse("1.0.0.0"), None);
        assert_eq!(Version::parse("x.0.0"), None);
        assert!(Version(0, 4, 0) < Version(1, 0, 0));
        assert!(Version(0, 4, 0).has_ip_version_field());
        assert!(!Version(1, 0, 0).has_ip_version_field());
        assert!(Version(1, 1, 0).at_least_1_1());
        assert!(Version::supported("1.0.0") && !Version::supported("0.3.1"));
    }
}
