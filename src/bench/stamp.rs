//! The send-time stamp carried in each event's `data`, and reading it back.
//!
//! Publisher and subscribers live in one process, so a process-local monotonic clock (nanoseconds since a
//! shared `Instant`) is exact: no clock sync, no wall-clock jumps. The stamp is plain text rather than JSON
//! so the receiver finds it with one substring search instead of parsing every frame twice (the frame, then
//! the JSON string in `data`): the bench must cost far less per delivery than the server it measures.
//!
//! Format: `hb1:{nanos}:{seq}:` then `x` padding up to the requested payload size. `hb1:` never appears in
//! a channel or event name (`:` is not allowed there), so a match is always the stamp.

use std::sync::OnceLock;
use std::time::Instant;

const MARKER: &str = "hb1:";

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process's bench epoch.
pub fn now_nanos() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Starts the clock; call once before any stamp is made so that early stamps are small numbers.
pub fn start_clock() {
    let _ = epoch();
}

/// The `data` string for one event: the stamp, padded with `x` to `payload` bytes (never shorter than the
/// stamp itself).
pub fn make_data(nanos: u64, seq: u64, payload: usize) -> String {
    let mut data = format!("{MARKER}{nanos}:{seq}:");
    if data.len() < payload {
        data.extend(std::iter::repeat_n('x', payload - data.len()));
    }
    data
}

/// The `data` of one event as `kind` says: [`make_data`] or [`make_json`].
pub fn data(kind: super::args::PayloadKind, nanos: u64, seq: u64, payload: usize) -> String {
    match kind {
        super::args::PayloadKind::Padding => make_data(nanos, seq, payload),
        super::args::PayloadKind::Json => make_json(nanos, seq, payload),
    }
}

const FIRST: [&str; 16] = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Ken",
    "Margaret",
    "Linus",
    "Frances",
    "Dennis",
    "Radia",
    "John",
    "Hedy",
    "Tim",
    "Katherine",
    "Niklaus",
];
const LAST: [&str; 16] = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Thompson",
    "Hamilton",
    "Torvalds",
    "Allen",
    "Ritchie",
    "Perlman",
    "McCarthy",
    "Lamarr",
    "Berners-Lee",
    "Johnson",
    "Wirth",
];
const ADJECTIVES: [&str; 12] = [
    "Walnut",
    "Compact",
    "Ergonomic",
    "Wireless",
    "Recycled",
    "Stainless",
    "Foldable",
    "Ceramic",
    "Oak",
    "Linen",
    "Heavy-duty",
    "Portable",
];
const NOUNS: [&str; 12] = [
    "desk lamp",
    "keyboard",
    "water bottle",
    "notebook",
    "monitor stand",
    "backpack",
    "headphones",
    "coffee grinder",
    "chair cushion",
    "phone charger",
    "bookshelf",
    "travel mug",
];
const STATUSES: [&str; 5] = ["paid", "packed", "shipped", "out_for_delivery", "delivered"];
const CARRIERS: [&str; 5] = ["DHL", "UPS", "FedEx", "La Poste", "PostNL"];
const CITIES: [&str; 8] = ["Lyon", "Leeds", "Porto", "Ghent", "Graz", "Aarhus", "Bologna", "Utrecht"];
const WORDS: [&str; 24] = [
    "please",
    "leave",
    "the",
    "parcel",
    "with",
    "the",
    "neighbour",
    "at",
    "number",
    "twelve",
    "if",
    "nobody",
    "answers",
    "ring",
    "twice",
    "gift",
    "wrap",
    "the",
    "second",
    "item",
    "and",
    "no",
    "invoice",
    "inside",
];

/// splitmix64: a different but repeatable event for every sequence number.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[self.below(words.len() as u64) as usize]
    }
}

/// An application event's JSON of exactly `payload` bytes (or the smallest order when `payload` is
/// less than that, ~450 bytes): the stamp in `t`, then an order with its customer, as many line items
/// as fit, shipping, and a delivery note of words filling it to the byte. Every event differs (its
/// `seq` seeds the choices) the way real events do: same keys, different values.
pub fn make_json(nanos: u64, seq: u64, payload: usize) -> String {
    use std::fmt::Write as _;
    let mut r = Mix(seq);
    let (first, last) = (r.pick(&FIRST), r.pick(&LAST));
    let mut head = String::with_capacity(payload + 64);
    let _ = write!(
        head,
        r#"{{"t":"{MARKER}{nanos}:{seq}:","type":"order.updated","order":{{"id":"ord_{:08x}","status":"{}","placed_at":"2026-12-{:02}T{:02}:{:02}:{:02}Z","customer":{{"id":{},"name":"{first} {last}","email":"{}.{}@example.com","city":"{}","tier":"{}"}},"items":["#,
        r.next() as u32,
        r.pick(&STATUSES),
        1 + r.below(28),
        r.below(24),
        r.below(60),
        r.below(60),
        10_000 + r.below(90_000),
        first.to_ascii_lowercase(),
        last.to_ascii_lowercase(),
        r.pick(&CITIES),
        if r.below(4) == 0 { "gold" } else { "standard" },
    );
    let mut cents = 0;
    let mut tail = String::new();
    let mut items = 0;
    loop {
        let (qty, price) = (1 + r.below(4), 199 + r.below(9_800));
        let item = format!(
            r#"{}{{"sku":"SKU-{}","name":"{} {}","qty":{qty},"unit_price":{}.{:02}}}"#,
            if items > 0 { "," } else { "" },
            10_000 + r.below(90_000),
            r.pick(&ADJECTIVES),
            r.pick(&NOUNS),
            price / 100,
            price % 100,
        );
        let shipping = shipping(&mut r, cents + qty * price);
        // Room for this item, the rest of the order and a short note.
        if items > 0 && head.len() + item.len() + shipping.len() + 16 > payload {
            break;
        }
        head.push_str(&item);
        cents += qty * price;
        items += 1;
        tail = shipping;
    }
    head.push_str(&tail);
    head.push_str(r#","note":""#);
    let room = payload.saturating_sub(head.len() + 2);
    let mut note = String::with_capacity(room + 16);
    while note.len() < room {
        if !note.is_empty() {
            note.push(' ');
        }
        note.push_str(r.pick(&WORDS));
    }
    note.truncate(room);
    head.push_str(&note);
    head.push_str(r#""}"#);
    head
}

/// The end of the order: items closed, shipping, total.
fn shipping(r: &mut Mix, cents: u64) -> String {
    format!(
        r#"],"shipping":{{"carrier":"{}","tracking":"JD{:018}","eta":"2026-12-{:02}"}},"total":{}.{:02},"currency":"EUR"}}"#,
        r.pick(&CARRIERS),
        r.next() % 1_000_000_000_000_000_000,
        1 + r.below(28),
        cents / 100,
        cents % 100
    )
}

/// The send time found in a received frame, if the frame carries a stamp.
pub fn find_stamp(frame: &str) -> Option<u64> {
    let at = frame.find(MARKER)? + MARKER.len();
    let digits = &frame[at..];
    let end = digits.find(':')?;
    digits[..end].parse().ok()
}

/// Every stamp in `text`, in order: the send times of the events of a line that carries several
/// (an `xhr_streaming` `a[...]` line), where the stamps sit escaped but intact.
pub fn each_stamp(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.match_indices(MARKER).filter_map(|(at, _)| find_stamp(&text[at..]))
}

/// Latency in microseconds of a frame received now, if it carries a stamp.
pub fn latency_micros(frame: &str, now: u64) -> Option<u64> {
    find_stamp(frame).map(|sent| now.saturating_sub(sent) / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_through_a_frame() {
        let data = make_data(123_456_789, 7, 100);
        assert_eq!(data.len(), 100);
        let frame = format!(r#"{{"event":"bench","channel":"bench-fanout","data":"{data}"}}"#);
        assert_eq!(find_stamp(&frame), Some(123_456_789));
        assert_eq!(latency_micros(&frame, 125_456_789), Some(2_000));
    }

    #[test]
    fn short_payload_keeps_the_whole_stamp() {
        assert_eq!(make_data(5, 1, 0), "hb1:5:1:");
    }

    #[test]
    fn json_payloads_are_valid_different_and_exactly_the_size_asked() {
        let a = make_json(42, 1, 1024);
        let b = make_json(42, 2, 1024);
        assert_eq!((a.len(), b.len()), (1024, 1024));
        assert_ne!(a, b);
        let v: serde_json::Value = serde_json::from_str(&a).expect("valid JSON");
        assert!(v["order"]["items"].as_array().is_some_and(|items| items.len() >= 5), "{a}");
        // As the API receives it (a JSON string) and as a subscriber sees it (inside the event).
        let frame = format!(r#"{{"event":"bench","data":{}}}"#, serde_json::to_string(&a).unwrap_or_default());
        assert_eq!(find_stamp(&frame), Some(42));
        // Small sizes give the smallest order, never a broken one.
        assert!(serde_json::from_str::<serde_json::Value>(&make_json(1, 1, 10)).is_ok());
    }

    #[test]
    fn frames_without_a_stamp_are_ignored() {
        assert_eq!(find_stamp(r#"{"event":"pusher:pong","data":"{}"}"#), None);
        assert_eq!(find_stamp("hb1:notanumber:"), None);
        assert_eq!(find_stamp("hb1:12"), None);
    }
}
