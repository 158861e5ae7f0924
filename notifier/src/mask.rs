//! Buyer contact masking. Every phone number or e-mail address that leaves the
//! notifier for display (message bodies, gRPC responses, logs) goes through here.

/// `13812345678` → `138****5678`; short numbers keep only their last two digits.
pub fn phone(raw: &str) -> String {
    let digits: Vec<char> = raw
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    let n = digits.len();
    if n == 0 {
        return String::new();
    }
    if n >= 7 {
        let head: String = digits[..3].iter().collect();
        let tail: String = digits[n - 4..].iter().collect();
        format!("{head}****{tail}")
    } else {
        let tail: String = digits[n.saturating_sub(2)..].iter().collect();
        format!("{}{tail}", "*".repeat(n.saturating_sub(2)))
    }
}

/// `john@example.com` → `j***@example.com`; anything without `@` is fully masked.
pub fn email(raw: &str) -> String {
    match raw.trim().split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        _ if raw.is_empty() => String::new(),
        _ => "***".to_owned(),
    }
}

/// `Li Lei` → `L*`: the first character only, so a support agent can tell two
/// buyers apart without reading the name.
pub fn name(raw: &str) -> String {
    match raw.trim().chars().next() {
        Some(first) => format!("{first}*"),
        None => String::new(),
    }
}

/// Masks the contact fields of a shipment in place (for gRPC responses).
pub fn shipment(shipment: &mut trackstream_proto::v1::Shipment) {
    if let Some(buyer) = shipment.buyer.as_mut() {
        buyer.name = name(&buyer.name);
        buyer.phone = phone(&buyer.phone);
        buyer.email = email(&buyer.email);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_and_emails_are_masked_as_specified() {
        assert_eq!(phone("13812345678"), "138****5678");
        assert_eq!(phone("+86 138-1234-5678"), "+86****5678");
        assert_eq!(phone("12345"), "***45");
        assert_eq!(phone(""), "");
        assert_eq!(email("john@example.com"), "j***@example.com");
        assert_eq!(email("李@例子.中国"), "李***@例子.中国");
        assert_eq!(email("not-an-email"), "***");
        assert_eq!(name(" Li Lei"), "L*");
        assert_eq!(name("李雷"), "李*");
        assert_eq!(name(""), "");
    }
}
