//! Annotation text: `{{ name }}` placeholders filled from a fixed set of values.
//! Hand-written because the set is small and fixed; a general template engine would
//! give alert authors loops and logic that annotation text does not need.

use std::collections::BTreeMap;

/// Formats `v` for people according to the rule's unit.
pub fn format_value(v: f64, unit: Option<&str>) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    match unit {
        Some("bytes") => human(v, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB"]),
        Some("bytes_per_second") => human(v, 1024.0, &["B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s"]),
        Some("bits_per_second") => human(v, 1000.0, &["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"]),
        Some("seconds") => {
            if v.abs() >= 1.0 {
                format!("{v:.2}s")
            } else if v.abs() >= 1e-3 {
                format!("{:.1}ms", v * 1e3)
            } else {
                format!("{:.0}µs", v * 1e6)
            }
        }
        Some("ratio") => format!("{:.2}%", v * 100.0),
        Some("percent") => format!("{v:.1}%"),
        Some("per_second") => format!("{}/s", short(v)),
        _ => short(v),
    }
}

fn short(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn human(v: f64, base: f64, units: &[&str]) -> String {
    let mut x = v;
    let mut i = 0;
    while x.abs() >= base && i + 1 < units.len() {
        x /= base;
        i += 1;
    }
    if i == 0 {
        format!("{x:.0}{}", units[0])
    } else {
        format!("{x:.1}{}", units[i])
    }
}

/// Replaces `{{ key }}` by `values[key]`; unknown keys are left visible as `{{ key }}`
/// so a typo shows in the text rather than vanishing.
pub fn render(template: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let key = after[..end].trim();
                match values.get(key) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_read_well() {
        assert_eq!(format_value(0.0523, Some("ratio")), "5.23%");
        assert_eq!(
            format_value(3.5 * 1024.0 * 1024.0, Some("bytes_per_second")),
            "3.5MiB/s"
        );
        assert_eq!(format_value(0.0042, Some("seconds")), "4.2ms");
        assert_eq!(format_value(12.0, None), "12");
    }

    #[test]
    fn placeholders_are_filled_and_unknown_ones_stay_visible() {
        let mut v = BTreeMap::new();
        v.insert("value".to_string(), "5%".to_string());
        v.insert("labels.device".to_string(), "eth0".to_string());
        assert_eq!(
            render("{{ value }} on {{labels.device}} {{ nope }}", &v),
            "5% on eth0 {{ nope }}"
        );
    }
}
