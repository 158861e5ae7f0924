//! The provider push formats the generator speaks and the secrets it signs
//! them with.

use trackstream_carriers::{AccountSecret, ProviderSettings};

/// A provider push format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    /// trackstream's generic JSON (incremental).
    Generic,
    /// Kdniao full snapshots.
    Kdniao,
    /// Kuaidi100 full snapshots, newest first.
    Kuaidi100,
    /// AfterShip tracking webhooks.
    Aftership,
    /// 17TRACK v2 webhooks.
    SeventeenTrack,
    /// EasyPost tracker events.
    Easypost,
}

impl Format {
    /// Every format, in rotation order.
    pub const ALL: [Format; 6] = [
        Format::Generic,
        Format::Kdniao,
        Format::Kuaidi100,
        Format::Aftership,
        Format::SeventeenTrack,
        Format::Easypost,
    ];

    /// The ingest route segment.
    pub fn route(self) -> &'static str {
        match self {
            Format::Generic => "generic",
            Format::Kdniao => "kdniao",
            Format::Kuaidi100 => "kuaidi100",
            Format::Aftership => "aftership",
            Format::SeventeenTrack => "17track",
            Format::Easypost => "easypost",
        }
    }

    /// The canonical carrier code scans of this format end up under.
    pub fn carrier(self, index: usize) -> &'static str {
        match self {
            Format::Generic => ["zto", "jd", "sto"][index % 3],
            Format::Kdniao => "sf",
            Format::Kuaidi100 => "yto",
            Format::Aftership => "ups",
            Format::SeventeenTrack => "chinapost",
            Format::Easypost => "usps",
        }
    }
}

/// Secrets the generator signs with; [`Secrets::provider_settings`] gives ingest
/// the matching config.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// Generic HMAC secret.
    pub generic: String,
    /// Kdniao EBusinessID.
    pub kdniao_account: String,
    /// Kdniao AppKey.
    pub kdniao_appkey: String,
    /// Kuaidi100 salt.
    pub kuaidi100_salt: String,
    /// AfterShip webhook secret.
    pub aftership: String,
    /// 17TRACK security key.
    pub seventeen_track: String,
    /// EasyPost webhook secret.
    pub easypost: String,
}

impl Default for Secrets {
    fn default() -> Self {
        Secrets {
            generic: "bench-generic".into(),
            kdniao_account: "1234567".into(),
            kdniao_appkey: "bench-kdniao-appkey".into(),
            kuaidi100_salt: "bench-kuaidi100-salt".into(),
            aftership: "bench-aftership".into(),
            seventeen_track: "bench-17track".into(),
            easypost: "bench-easypost".into(),
        }
    }
}

impl Secrets {
    /// `(route, settings)` for every provider, for ingest's config.
    pub fn provider_settings(&self) -> Vec<(&'static str, ProviderSettings)> {
        let one = |account: &str, secret: &str| ProviderSettings {
            secrets: vec![AccountSecret {
                account: account.to_owned(),
                secret: secret.to_owned(),
            }],
            ..ProviderSettings::default()
        };
        vec![
            ("generic", one("bench", &self.generic)),
            ("kdniao", one(&self.kdniao_account, &self.kdniao_appkey)),
            ("kuaidi100", one("", &self.kuaidi100_salt)),
            ("aftership", one("", &self.aftership)),
            ("17track", one("", &self.seventeen_track)),
            ("easypost", one("", &self.easypost)),
        ]
    }
}
