//! The province and city of a Chinese scan, for per-region delivery statistics.
//!
//! Delivery statistics are kept per region (lanes are keyed by the province and
//! city a shipment registers, in full form: "浙江省", "杭州市"), so a scan's
//! `Location` should name its province and city the same way. Chinese providers
//! seldom say so in fields: Kdniao gives a city ("深圳市") and free text
//! ("【浙江省杭州市萧山区公司】 已揽收"), Kuaidi100 an `areaCode` and an
//! `areaName` ("广东,深圳市,宝安区"). This module reads both:
//!
//! - [`PROVINCES`]: the 34 province-level divisions with their GB/T 2260 code
//!   prefix (GB/T 2260 "中华人民共和国行政区划代码"; the 9- and 12-digit codes of
//!   the National Bureau of Statistics' 统计用区划代码, which Kuaidi100 sends as
//!   `CN` + 12 digits, share the same first two digits), full and short Chinese
//!   name, and English name. [`province_for_code`] looks a code up.
//! - [`parse_cn_location`]: the province and city of carrier text, written the
//!   way Kdniao and Chinese carriers write it. A province is a full or short
//!   name at the start of a segment (segments are split at punctuation, spaces
//!   and brackets); the city is the first name ending in 市, 州, 盟 or 地区 right
//!   after it, else at the start of a later or bracketed segment. Without a
//!   province only a 市 name counts, and no province is guessed from a city
//!   (there is no city table). Text after "下一站" / "发往" names where the parcel
//!   goes next, not where it is, and is ignored.
//! - [`fill_from_text`]: how adapters use it, filling only what is still empty
//!   and only from text that agrees with what is already known.
//!
//! Parsing works on `char`s (never byte offsets), reads at most the first
//! [`MAX_CHARS`] characters, and never panics: the input is provider data.

use trackstream_proto::v1::Location;

/// One province-level division of China.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Province {
    /// GB/T 2260 two-digit prefix ("33").
    pub code: &'static str,
    /// Full Chinese name ("浙江省", "内蒙古自治区").
    pub name: &'static str,
    /// Short name, as carriers write it ("浙江", "内蒙古").
    pub short: &'static str,
    /// English name ("Zhejiang", "Inner Mongolia").
    pub english: &'static str,
}

impl Province {
    /// Beijing, Tianjin, Shanghai and Chongqing: their city is the province itself.
    pub fn is_municipality(&self) -> bool {
        matches!(self.code, "11" | "12" | "31" | "50")
    }
}

const fn row(
    code: &'static str,
    name: &'static str,
    short: &'static str,
    english: &'static str,
) -> Province {
    Province {
        code,
        name,
        short,
        english,
    }
}

/// China's 34 province-level divisions, in GB/T 2260 code order.
pub const PROVINCES: &[Province] = &[
    row("11", "北京市", "北京", "Beijing"),
    row("12", "天津市", "天津", "Tianjin"),
    row("13", "河北省", "河北", "Hebei"),
    row("14", "山西省", "山西", "Shanxi"),
    row("15", "内蒙古自治区", "内蒙古", "Inner Mongolia"),
    row("21", "辽宁省", "辽宁", "Liaoning"),
    row("22", "吉林省", "吉林", "Jilin"),
    row("23", "黑龙江省", "黑龙江", "Heilongjiang"),
    row("31", "上海市", "上海", "Shanghai"),
    row("32", "江苏省", "江苏", "Jiangsu"),
    row("33", "浙江省", "浙江", "Zhejiang"),
    row("34", "安徽省", "安徽", "Anhui"),
    row("35", "福建省", "福建", "Fujian"),
    row("36", "江西省", "江西", "Jiangxi"),
    row("37", "山东省", "山东", "Shandong"),
    row("41", "河南省", "河南", "Henan"),
    row("42", "湖北省", "湖北", "Hubei"),
    row("43", "湖南省", "湖南", "Hunan"),
    row("44", "广东省", "广东", "Guangdong"),
    row("45", "广西壮族自治区", "广西", "Guangxi"),
    row("46", "海南省", "海南", "Hainan"),
    row("50", "重庆市", "重庆", "Chongqing"),
    row("51", "四川省", "四川", "Sichuan"),
    row("52", "贵州省", "贵州", "Guizhou"),
    row("53", "云南省", "云南", "Yunnan"),
    row("54", "西藏自治区", "西藏", "Tibet"),
    row("61", "陕西省", "陕西", "Shaanxi"),
    row("62", "甘肃省", "甘肃", "Gansu"),
    row("63", "青海省", "青海", "Qinghai"),
    row("64", "宁夏回族自治区", "宁夏", "Ningxia"),
    row("65", "新疆维吾尔自治区", "新疆", "Xinjiang"),
    row("71", "台湾省", "台湾", "Taiwan"),
    row("81", "香港特别行政区", "香港", "Hong Kong"),
    row("82", "澳门特别行政区", "澳门", "Macao"),
];

/// The province of an administrative code of 6 to 12 ASCII digits (GB/T 2260,
/// or a statistical code); `None` for anything else.
pub fn province_for_code(code: &str) -> Option<&'static Province> {
    if !(6..=12).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix = code.get(..2)?;
    PROVINCES.iter().find(|p| p.code == prefix)
}

/// The province a merchant or provider names, in any of the forms seen:
/// full ("浙江省"), short ("浙江") or English ("Zhejiang", any case, with or
/// without " Province"); `None` for anything else.
pub fn province_named(name: &str) -> Option<&'static Province> {
    let name = name.trim();
    let english = name.to_ascii_lowercase();
    let english = english.trim_end_matches(" province").trim();
    PROVINCES
        .iter()
        .find(|p| p.name == name || p.short == name || p.english.eq_ignore_ascii_case(english))
}

/// A province and city in full Chinese form; either may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Area {
    /// "浙江省", or "" when the text does not say.
    pub province: String,
    /// "杭州市", or "" when the text does not say.
    pub city: String,
}

/// How many characters of a text are read: a place comes first in carrier
/// text, and the bound keeps the work per trace constant.
pub const MAX_CHARS: usize = 200;
/// The longest city name, suffix included (克孜勒苏柯尔克孜自治州 has 11).
const MAX_CITY_CHARS: usize = 12;
/// Where the parcel goes next; what follows is not where it is.
const ONWARD: &[&str] = &["下一站", "发往", "送往", "转往", "寄往"];
/// A short province name followed by one of these is a district, street or
/// school ("河北区", "山东路", "浙江大学", "海南州"), not the province.
const NOT_AFTER_SHORT: &[char] = &['区', '路', '街', '道', '大', '州'];
/// A 市 after one of these is a shop or a market ("超市", "门市"), not a city.
const NOT_BEFORE_SHI: &[char] = &['超', '门', '城', '菜', '夜', '集'];
/// Characters of districts, streets and buildings: a city name has none.
const NOT_IN_CITY: &[char] = &['区', '县', '镇', '乡', '路', '街', '村', '号', '省'];

/// A run of letters and digits; `bracketed` when it starts inside 【】 or [].
struct Segment {
    start: usize,
    end: usize,
    bracketed: bool,
}

/// The province and city of Chinese carrier text (see the module doc), or
/// `None` when it names neither.
pub fn parse_cn_location(text: &str) -> Option<Area> {
    let all: Vec<char> = text.chars().take(MAX_CHARS).collect();
    let chars = all.get(..onward_cut(&all)).unwrap_or_default();
    let segments = segments(chars);
    let found = segments.iter().enumerate().find_map(|(index, segment)| {
        province_at(chars, segment).map(|(province, after, short)| (index, province, after, short))
    });
    let Some((index, province, after, short)) = found else {
        let city = segments
            .iter()
            .find_map(|s| city_at(chars, s.start, s.end, false))?;
        return Some(Area {
            province: String::new(),
            city,
        });
    };
    let city = if province.is_municipality() {
        province.name.to_owned()
    } else {
        let end = segments.get(index).map_or(after, |s| s.end);
        let rest = chars.get(after..end).unwrap_or_default();
        if short && province.code == "22" && rest.first() == Some(&'市') {
            // 吉林市, the one city named like its province (吉林省).
            format!("{}市", province.short)
        } else if let Some(city) = city_at(chars, after, end, true) {
            city
        } else {
            // A city elsewhere must agree with what follows the province:
            // "【杭州市】 浙江杭州转运中心" but not "【广州市】 浙江温州转运中心".
            segments
                .iter()
                .enumerate()
                .filter(|(i, s)| *i > index || s.bracketed)
                .filter_map(|(_, s)| city_at(chars, s.start, s.end, true))
                .find(|city| rest.is_empty() || rest.starts_with(&stem(city)))
                .unwrap_or_default()
        }
    };
    Some(Area {
        province: province.name.to_owned(),
        city,
    })
}

/// Fills `location.city` and `location.region` where they are empty from
/// [`parse_cn_location`] of `text`, unless the text names another city or
/// province than those already known: a trace's free text may mention more
/// places than the one the provider's fields name.
pub fn fill_from_text(location: &mut Location, text: &str) {
    let Some(area) = parse_cn_location(text) else {
        return;
    };
    let city_agrees = location.city.is_empty() || stem(&location.city) == stem(&area.city);
    let province_agrees =
        location.region.is_empty() || area.province.is_empty() || location.region == area.province;
    if !city_agrees || !province_agrees {
        return;
    }
    if location.city.is_empty() {
        location.city = area.city;
    }
    if location.region.is_empty() {
        location.region = area.province;
    }
}

/// The index where the text turns to the next stop ([`ONWARD`]), else its length.
fn onward_cut(chars: &[char]) -> usize {
    (0..chars.len())
        .find(|&i| ONWARD.iter().any(|marker| starts_with_at(chars, i, marker)))
        .unwrap_or(chars.len())
}

fn segments(chars: &[char]) -> Vec<Segment> {
    let mut segments = Vec::new();
    let (mut start, mut inside) = (None, false);
    for (i, &c) in chars.iter().chain(std::iter::once(&' ')).enumerate() {
        if c.is_alphanumeric() {
            start.get_or_insert((i, inside));
            continue;
        }
        if let Some((start, bracketed)) = start.take() {
            segments.push(Segment {
                start,
                end: i,
                bracketed,
            });
        }
        match c {
            '【' | '[' => inside = true,
            '】' | ']' => inside = false,
            _ => {}
        }
    }
    segments
}

/// The province named at the start of `segment`, where its name ends, and
/// whether that name is the bare short name.
fn province_at(chars: &[char], segment: &Segment) -> Option<(&'static Province, usize, bool)> {
    let text = chars.get(segment.start..segment.end)?;
    if let Some(p) = PROVINCES.iter().find(|p| starts_with_at(text, 0, p.name)) {
        return Some((p, segment.start + p.name.chars().count(), false));
    }
    let p = PROVINCES.iter().find(|p| {
        let len = p.short.chars().count();
        starts_with_at(text, 0, p.short)
            && !text.get(len).is_some_and(|c| NOT_AFTER_SHORT.contains(c))
    })?;
    let short = p.short.chars().count();
    // Informal suffixes: "广西省", "广西自治区".
    let suffix = ["省", "自治区"]
        .iter()
        .find(|s| starts_with_at(text, short, s))
        .map_or(0, |s| s.chars().count());
    Some((p, segment.start + short + suffix, suffix == 0))
}

/// A city name starting at `start` and ending before `end`: at least one
/// character, then 市 (or, when `any_suffix`, 州 after at least two, 盟 or 地区).
/// A 州 followed by 市 is part of the name (杭州市), and "杭州" alone is not
/// told from "杭州转运中心", so one-character 州 names need their 市.
fn city_at(chars: &[char], start: usize, end: usize, any_suffix: bool) -> Option<String> {
    let limit = end.min(start.saturating_add(MAX_CITY_CHARS));
    for k in start.saturating_add(1)..limit {
        let c = *chars.get(k)?;
        let prev = chars.get(k - 1).copied();
        let next = chars.get(k + 1).copied().filter(|_| k + 1 < end);
        let named = k - start;
        let name_end = match c {
            '市' if !prev.is_some_and(|p| NOT_BEFORE_SHI.contains(&p)) && next != Some('场') => {
                Some(k + 1)
            }
            '州' if any_suffix && named >= 2 && next != Some('市') => Some(k + 1),
            '盟' if any_suffix && named >= 2 => Some(k + 1),
            '地' if any_suffix && named >= 2 && next == Some('区') => Some(k + 2),
            c if NOT_IN_CITY.contains(&c) => return None,
            _ => None,
        };
        if let Some(name_end) = name_end {
            return Some(chars.get(start..name_end)?.iter().collect());
        }
    }
    None
}

/// A city name without its suffix ("杭州市" → "杭州"), for comparing names.
fn stem(city: &str) -> Vec<char> {
    let city = ["地区", "市", "州", "盟"]
        .iter()
        .find_map(|s| city.strip_suffix(s))
        .unwrap_or(city);
    city.chars().collect()
}

/// Whether `needle` occurs in `chars` at index `at`.
fn starts_with_at(chars: &[char], at: usize, needle: &str) -> bool {
    (at..)
        .zip(needle.chars())
        .all(|(position, c)| chars.get(position) == Some(&c))
}

#[cfg(test)]
#[path = "area_tests.rs"]
mod tests;
