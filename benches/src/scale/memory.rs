//! Where Redis memory goes, by key class: every key is read with `SCAN` and
//! sized with `MEMORY USAGE` (pipelined), so the plan can size Redis per
//! parcel from what each part of the layout costs, not from one total.

use std::collections::BTreeMap;

/// Keys and bytes of one class.
#[derive(Debug, Clone, Default)]
pub(crate) struct Class {
    pub(crate) keys: u64,
    pub(crate) bytes: u64,
}

/// The class of a key, from the layouts in `detector::store::keys`,
/// `runtime::order_log`, `runtime::ownership` and the notifier's outbox.
fn class_of(key: &str) -> String {
    if let Some(rest) = key.strip_prefix("{o:") {
        let suffix = rest.split_once("}:").map_or("", |(_, s)| s);
        let kind = suffix.split(':').next().unwrap_or(suffix);
        return format!("order `{kind}`");
    }
    if key.starts_with("{nsched") {
        return "notifier message schedule (`{nschedN}`)".to_owned();
    }
    if key.starts_with("own:") {
        return "ownership claim".to_owned();
    }
    if key.starts_with("{p") {
        if key.contains("}:wb:") {
            return "detector state (`wb`)".to_owned();
        }
        if key.contains("}:ev:") {
            return "detector history (`ev`)".to_owned();
        }
        return "detector per partition (timers, outbox, watermark)".to_owned();
    }
    format!("other `{}`", key.split(':').next().unwrap_or(key))
}

/// Memory by class over every node at `urls`.
pub(crate) async fn by_class(urls: &[String]) -> anyhow::Result<BTreeMap<String, Class>> {
    let mut classes: BTreeMap<String, Class> = BTreeMap::new();
    for url in urls {
        let mut conn = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if keys.is_empty() && next == 0 {
                break;
            }
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("MEMORY")
                    .arg("USAGE")
                    .arg(key)
                    .arg("SAMPLES")
                    .arg(0);
            }
            let sizes: Vec<Option<u64>> = if keys.is_empty() {
                Vec::new()
            } else {
                pipe.query_async(&mut conn).await?
            };
            for (key, size) in keys.iter().zip(sizes) {
                let class = classes.entry(class_of(key)).or_default();
                class.keys += 1;
                class.bytes += size.unwrap_or(0);
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(classes)
}

#[cfg(test)]
mod tests {
    use super::class_of;

    #[test]
    fn keys_fall_into_their_layouts_classes() {
        assert_eq!(class_of("{p3}:wb:sf:1"), "detector state (`wb`)");
        assert_eq!(class_of("{p3}:ev:sf:1"), "detector history (`ev`)");
        assert_eq!(
            class_of("{p3}:timers"),
            "detector per partition (timers, outbox, watermark)"
        );
        assert_eq!(class_of("{o:m/O1}:updates"), "order `updates`");
        assert_eq!(class_of("{o:m/O1}:ht:shipped"), "order `ht`");
        assert_eq!(class_of("own:{sf:1}"), "ownership claim");
        assert_eq!(
            class_of("{nsched3}"),
            "notifier message schedule (`{nschedN}`)"
        );
    }
}
