//! SMS length: how many segments (parts) a body takes on the air interface.
//!
//! Rules (3GPP TS 23.038 §6.2.1 for the alphabet, TS 23.040 §9.2.3.24.1 for
//! concatenation, as in GSM 03.38 / 03.40):
//!
//! - A body whose every character is in the GSM 7-bit default alphabet or its extension
//!   table is sent in GSM 7-bit: 160 septets in a single message, 153 per part of a
//!   concatenated one (the 6-octet user-data header takes 7 septets). An extension
//!   character (`^ { } \ [ ~ ] | €` and form feed) is an escape plus a septet: 2 septets,
//!   and the pair is never split across parts.
//! - Any other character (all Chinese text) makes the whole body UCS-2: 70 UTF-16 code
//!   units in a single message, 67 per part. A character outside the Basic Multilingual
//!   Plane (an emoji) is a surrogate pair, 2 units, never split across parts.
//!
//! Carriers and gateways bill per part, and handsets rebuild a concatenated message from
//! its parts; the outbox refuses a body longer than the county's segment limit rather
//! than cut it (see [`crate::outbox`]).

/// Character set a body is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmsEncoding {
    Gsm7,
    Ucs2,
}

/// Length of one SMS body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SmsLength {
    pub encoding: SmsEncoding,
    /// Characters (Unicode scalar values).
    pub chars: usize,
    /// Septets (GSM 7-bit) or UTF-16 code units (UCS-2).
    pub units: usize,
    /// Segments the body takes (1 for a single message, 0 for an empty body).
    pub segments: usize,
}

/// The GSM 7-bit default alphabet (TS 23.038 table 6.2.1), one septet each.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The default extension table (TS 23.038 table 6.2.1.1), escape + septet each.
const GSM7_EXTENSION: &str = "\u{000C}^{}\\[~]|€";

/// Units per single message and per concatenated part.
const GSM7_SINGLE: usize = 160;
const GSM7_PART: usize = 153;
const UCS2_SINGLE: usize = 70;
const UCS2_PART: usize = 67;

fn gsm7_septets(c: char) -> Option<usize> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Packs characters of `widths` units into parts of `part` units, never splitting a
/// character.
fn parts(widths: impl Iterator<Item = usize>, part: usize) -> usize {
    let (mut count, mut used) = (0, 0);
    for w in widths {
        if count == 0 || used + w > part {
            count += 1;
            used = 0;
        }
        used += w;
    }
    count
}

/// Measures `body`: encoding, units and segments.
pub fn measure(body: &str) -> SmsLength {
    let chars = body.chars().count();
    let gsm: Option<Vec<usize>> = body.chars().map(gsm7_septets).collect();
    let (encoding, widths, single, part) = match gsm {
        Some(w) => (SmsEncoding::Gsm7, w, GSM7_SINGLE, GSM7_PART),
        None => (
            SmsEncoding::Ucs2,
            body.chars().map(char::len_utf16).collect(),
            UCS2_SINGLE,
            UCS2_PART,
        ),
    };
    let units: usize = widths.iter().sum();
    let segments = match units {
        0 => 0,
        u if u <= single => 1,
        _ => parts(widths.into_iter(), part),
    };
    SmsLength {
        encoding,
        chars,
        units,
        segments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_follow_ts_23_040() {
        use SmsEncoding::*;
        let zh = |n: usize| "电".repeat(n);
        let a = |n: usize| "a".repeat(n);
        // (name, body, encoding, units, segments)
        let cases: Vec<(&str, String, SmsEncoding, usize, usize)> = vec![
            ("empty", String::new(), Gsm7, 0, 0),
            ("ascii 1", a(1), Gsm7, 1, 1),
            ("ascii 160", a(160), Gsm7, 160, 1),
            ("ascii 161", a(161), Gsm7, 161, 2),
            ("ascii 306", a(306), Gsm7, 306, 2),
            ("ascii 307", a(307), Gsm7, 307, 3),
            ("gsm accents", "Ça été où ½".replace('½', "Ø"), Gsm7, 11, 1),
            ("extension counts 2", "{}".repeat(40), Gsm7, 160, 1),
            ("extension over 160", format!("{}€", a(159)), Gsm7, 161, 2),
            // the escape pair is not split: 152 'a' + '€' does not fit 153 → 2 parts
            (
                "extension at part edge",
                format!("{}€{}", a(152), a(10)),
                Gsm7,
                164,
                2,
            ),
            ("zh 1", zh(1), Ucs2, 1, 1),
            ("zh 70", zh(70), Ucs2, 70, 1),
            ("zh 71", zh(71), Ucs2, 71, 2),
            ("zh 134", zh(134), Ucs2, 134, 2),
            ("zh 135", zh(135), Ucs2, 135, 3),
            ("zh 201", zh(201), Ucs2, 201, 3),
            ("zh 202", zh(202), Ucs2, 202, 4),
            // one Chinese character makes ASCII text UCS-2
            ("mixed 70", format!("{}元", a(69)), Ucs2, 70, 1),
            ("mixed 71", format!("{}元", a(70)), Ucs2, 71, 2),
            (
                "mixed signature",
                "【仙游供电】balance 23.40 yuan".into(),
                Ucs2,
                24,
                1,
            ),
            // a character outside the BMP is 2 UTF-16 units and is not split
            ("emoji 35", "😀".repeat(35), Ucs2, 70, 1),
            (
                "emoji straddles a part",
                format!("{}😀", zh(66)),
                Ucs2,
                68,
                1,
            ),
            (
                "emoji after 66 of 71",
                format!("{}😀{}", zh(66), zh(3)),
                Ucs2,
                71,
                2,
            ),
            ("non-GSM latin", "café ñ ç".replace('ç', "ĉ"), Ucs2, 8, 1),
        ];
        for (name, body, enc, units, segments) in cases {
            let m = measure(&body);
            assert_eq!(
                (m.encoding, m.units, m.segments),
                (enc, units, segments),
                "{name}: {body:?}"
            );
            assert_eq!(m.chars, body.chars().count(), "{name}");
        }
    }

    #[test]
    fn the_part_boundary_never_splits_a_surrogate_pair() {
        // 66 Chinese characters + an emoji + 1 = 69 units: a single message.
        assert_eq!(measure(&format!("{}😀电", "电".repeat(66))).segments, 1);
        // 66 zh + emoji + 66 zh = 134 units, which would fit 2 parts of 67 if the pair
        // could be split: part 1 is 66 zh (the emoji would need units 67–68), part 2 the
        // emoji and 65 zh, part 3 the last character.
        let body = format!("{}😀{}", "电".repeat(66), "电".repeat(66));
        assert_eq!(measure(&body).units, 134);
        assert_eq!(measure(&body).segments, 3);
    }
}
