//! Unit tests of [`super`]: the examples of the module doc and of Kdniao and
//! Kuaidi100 traces, codes, the table itself, and input that must not panic.

use super::*;

fn area(text: &str) -> Option<(String, String)> {
    parse_cn_location(text).map(|a| (a.province, a.city))
}

#[test]
fn carrier_texts_give_province_and_city() {
    for (text, province, city) in [
        ("【杭州市】 浙江杭州转运中心 已发出", "浙江省", "杭州市"),
        ("[成都市]快件已到达", "", "成都市"),
        ("浙江省杭州市余杭区", "浙江省", "杭州市"),
        ("广东深圳市宝安区", "广东省", "深圳市"),
        ("上海市浦东新区", "上海市", "上海市"),
        ("北京海淀区", "北京市", "北京市"),
        ("到达【重庆市渝北区】", "重庆市", "重庆市"),
        ("天津市河北区", "天津市", "天津市"),
        ("【浙江省杭州市萧山区公司】 已揽收", "浙江省", "杭州市"),
        ("四川,成都市,双流区,中和", "四川省", "成都市"),
        ("【成都市】四川成都转运中心", "四川省", "成都市"),
        ("内蒙古呼和浩特市", "内蒙古自治区", "呼和浩特市"),
        ("内蒙古锡林郭勒盟", "内蒙古自治区", "锡林郭勒盟"),
        ("广西南宁市", "广西壮族自治区", "南宁市"),
        ("广西省南宁市", "广西壮族自治区", "南宁市"),
        ("广西壮族自治区桂林市", "广西壮族自治区", "桂林市"),
        ("新疆和田地区", "新疆维吾尔自治区", "和田地区"),
        ("西藏拉萨市", "西藏自治区", "拉萨市"),
        ("宁夏银川市兴庆区", "宁夏回族自治区", "银川市"),
        ("湖北省恩施州恩施市", "湖北省", "恩施州"),
        ("青海省海南藏族自治州", "青海省", "海南藏族自治州"),
        ("吉林市船营区", "吉林省", "吉林市"),
        ("吉林省吉林市", "吉林省", "吉林市"),
        ("广东市场部", "广东省", ""),
        ("香港特别行政区九龙", "香港特别行政区", ""),
        ("澳门", "澳门特别行政区", ""),
        ("【广州市】 浙江温州转运中心", "浙江省", ""),
        ("浙江温州转运中心", "浙江省", ""),
        ("📦【杭州市】🚚 浙江杭州转运中心", "浙江省", "杭州市"),
        ("Arrived at 杭州市 hub", "", "杭州市"),
        ("مرحبا 浙江省杭州市", "浙江省", "杭州市"),
    ] {
        let expected = Some((province.to_owned(), city.to_owned()));
        assert_eq!(area(text), expected, "{text}");
    }
}

#[test]
fn texts_without_a_told_place_give_none() {
    for text in [
        "杭州转运中心",
        "快件已到达【深圳转运中心】",
        "快件已从【杭州转运中心】发出，下一站【上海市转运中心】",
        "河北区",
        "山东路营业点",
        "【华联超市】代收",
        "【市区营业部】",
        "恩施州",
        "é浙江省",
        "",
        "🙂🙂🙂",
        "Hangzhou, Zhejiang",
    ] {
        assert_eq!(area(text), None, "{text}");
    }
}

#[test]
fn long_and_garbage_input_is_bounded_and_never_panics() {
    let late = format!("{}浙江省杭州市", "快".repeat(MAX_CHARS));
    assert_eq!(area(&late), None, "only the first MAX_CHARS are read");
    let alphabet: Vec<char> = "浙江省杭州市州盟地区【】[]市超 ,🚚é\u{0301}\u{3000}下一站"
        .chars()
        .collect();
    for seed in 0..alphabet.len() {
        let garbage: String = (0..10_000)
            .filter_map(|i| alphabet.get((i * 7 + seed * 13 + i / 3) % alphabet.len()))
            .collect();
        let _ = parse_cn_location(&garbage);
    }
    for repeated in ["市", "【", "浙江", "州市", "地区", "\u{0301}"] {
        let _ = parse_cn_location(&repeated.repeat(10_000));
    }
}

#[test]
fn codes_give_their_province() {
    for (code, name) in [
        ("330100", Some("浙江省")),
        ("110000000000", Some("北京市")),
        ("510116004000", Some("四川省")),
        ("820000", Some("澳门特别行政区")),
        ("650100000", Some("新疆维吾尔自治区")),
        ("xx", None),
        ("99", None),
        ("990000", None),
        ("", None),
        ("33010a", None),
        ("CN330100", None),
        (" 330100", None),
        ("3301001234567", None),
        ("３３０１００", None),
        ("浙江省", None),
    ] {
        assert_eq!(province_for_code(code).map(|p| p.name), name, "{code:?}");
    }
}

#[test]
fn the_table_has_34_unique_rows_that_parse_back() {
    assert_eq!(PROVINCES.len(), 34);
    for (i, p) in PROVINCES.iter().enumerate() {
        assert!(
            PROVINCES
                .get(i + 1..)
                .unwrap_or_default()
                .iter()
                .all(|q| { q.code != p.code && q.name != p.name && q.short != p.short })
        );
        assert_eq!(province_for_code(&format!("{}0000", p.code)), Some(p));
        assert!(p.name.starts_with(p.short) && !p.english.is_empty());
        let city = if p.is_municipality() {
            p.name
        } else {
            "某某市"
        };
        for text in [p.name.to_owned(), format!("{}某某市", p.short)] {
            let parsed = parse_cn_location(&format!("{text}某某市"));
            assert_eq!(parsed.as_ref().map(|a| a.province.as_str()), Some(p.name));
            assert_eq!(parsed.map(|a| a.city).as_deref(), Some(city), "{text}");
        }
    }
    let english = |code| PROVINCES.iter().find(|p| p.code == code).map(|p| p.english);
    assert_eq!(english("15"), Some("Inner Mongolia"));
    assert_eq!(english("33"), Some("Zhejiang"));
}

#[test]
fn filling_keeps_known_fields_and_refuses_disagreeing_text() {
    let mut location = Location {
        city: "深圳".into(),
        ..Location::default()
    };
    fill_from_text(&mut location, "【广州市】 广东广州转运中心");
    assert_eq!(
        (location.region.as_str(), location.city.as_str()),
        ("", "深圳")
    );
    fill_from_text(&mut location, "【广东省深圳市宝安区公司】 已揽收");
    assert_eq!(
        (location.region.as_str(), location.city.as_str()),
        ("广东省", "深圳")
    );

    let mut location = Location {
        region: "浙江省".into(),
        ..Location::default()
    };
    fill_from_text(&mut location, "四川省成都市");
    assert_eq!(
        (location.region.as_str(), location.city.as_str()),
        ("浙江省", "")
    );
    fill_from_text(&mut location, "浙江杭州市");
    assert_eq!(
        (location.region.as_str(), location.city.as_str()),
        ("浙江省", "杭州市")
    );
}

#[test]
fn a_province_is_known_by_any_of_its_names() {
    for name in [
        "浙江省",
        "浙江",
        "Zhejiang",
        "zhejiang province",
        " ZHEJIANG ",
    ] {
        assert_eq!(
            province_named(name).map(|p| p.name),
            Some("浙江省"),
            "{name}"
        );
    }
    assert_eq!(province_named("内蒙古").map(|p| p.code), Some("15"));
    for name in ["", "杭州市", "Zhe", "浙江省杭州市"] {
        assert_eq!(province_named(name), None, "{name}");
    }
}
