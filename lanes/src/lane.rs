//! Lanes and their fallback levels.

use serde::{Deserialize, Serialize};

/// Where a parcel goes, as precisely as the registration says.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lane {
    /// Canonical carrier code.
    pub carrier: String,
    /// Service level ("standard", "express"…), empty when unknown.
    pub service_level: String,
    /// Origin region (province, or province/city), empty when unknown.
    pub origin: String,
    /// Destination region (province/city), empty when unknown.
    pub destination: String,
}

/// How specific the statistics behind a prediction are, most specific first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Level {
    /// Carrier × service level × origin × destination.
    Lane,
    /// Carrier × destination province.
    CarrierDestination,
    /// Carrier alone.
    Carrier,
    /// Every parcel.
    Everything,
}

impl Level {
    /// All levels, most specific first (the fallback order).
    pub const ALL: [Level; 4] = [
        Level::Lane,
        Level::CarrierDestination,
        Level::Carrier,
        Level::Everything,
    ];

    /// Name used in keys and reports.
    pub fn name(self) -> &'static str {
        match self {
            Level::Lane => "lane",
            Level::CarrierDestination => "carrier_destination",
            Level::Carrier => "carrier",
            Level::Everything => "all",
        }
    }
}

impl Lane {
    /// The key of this lane at `level`: the statistics of every parcel whose
    /// lane shares it are kept together. Keys are printable and contain no
    /// `{`/`}`, so a store may wrap them in a hash tag.
    pub fn key(&self, level: Level) -> String {
        let province = self
            .destination
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let clean = |s: &str| s.replace(['{', '}', '|'], "_");
        match level {
            Level::Lane => format!(
                "lane|{}|{}|{}|{}",
                clean(&self.carrier),
                clean(&self.service_level),
                clean(&self.origin),
                clean(&self.destination)
            ),
            Level::CarrierDestination => {
                format!("cd|{}|{}", clean(&self.carrier), clean(&province))
            }
            Level::Carrier => format!("c|{}", clean(&self.carrier)),
            Level::Everything => "all".to_owned(),
        }
    }

    /// `(level, key)` for every level, most specific first.
    pub fn keys(&self) -> Vec<(Level, String)> {
        Level::ALL.iter().map(|l| (*l, self.key(*l))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_coarsen_and_keys_cannot_break_a_hash_tag() {
        let lane = Lane {
            carrier: "zto".into(),
            service_level: "standard".into(),
            origin: "Zhejiang/Hangzhou".into(),
            destination: "Sichuan/Chengdu{x}".into(),
        };
        let keys = lane.keys();
        assert_eq!(
            keys[0].1,
            "lane|zto|standard|Zhejiang/Hangzhou|Sichuan/Chengdu_x_"
        );
        assert_eq!(keys[1].1, "cd|zto|Sichuan");
        assert_eq!(keys[2].1, "c|zto");
        assert_eq!(keys[3].1, "all");
        assert!(
            keys.iter()
                .all(|(_, k)| !k.contains('{') && !k.contains('}'))
        );
    }
}
