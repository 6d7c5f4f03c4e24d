//! What fills a bench event's `data`: the stamp, then either padding or JSON shaped like what applications
//! broadcast. Compression is measured on the JSON kinds, so their shape decides the figures: every event
//! differs from the one before (same keys, different values), as real events do, and is exactly the size
//! asked for.

use super::args::PayloadKind;
use super::stamp;

/// The `data` of one event as `kind` says.
pub fn data(kind: PayloadKind, nanos: u64, seq: u64, payload: usize) -> String {
    match kind {
        PayloadKind::Padding => stamp::make_data(nanos, seq, payload),
        PayloadKind::Json => order(nanos, seq, payload),
        PayloadKind::Eloquent => eloquent(nanos, seq, payload),
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
pub fn order(nanos: u64, seq: u64, payload: usize) -> String {
    use std::fmt::Write as _;
    let mut r = Mix(seq);
    let (first, last) = (r.pick(&FIRST), r.pick(&LAST));
    let mut head = String::with_capacity(payload + 64);
    let _ = write!(
        head,
        r#"{{"t":"{}","type":"order.updated","order":{{"id":"ord_{:08x}","status":"{}","placed_at":"2026-12-{:02}T{:02}:{:02}:{:02}Z","customer":{{"id":{},"name":"{first} {last}","email":"{}.{}@example.com","city":"{}","tier":"{}"}},"items":["#,
        stamp::make_data(nanos, seq, 0),
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
    let note = words(&mut r, room);
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

/// A Laravel broadcast of an Eloquent model, as `Broadcast`/`ShouldBroadcast` serializes it: the event's
/// public properties (the stamp in `t`, then `order`, then the `socket` Laravel always adds), the model
/// through `toArray()` with its `user` and `items` relations loaded, columns in table order, timestamps
/// as Laravel writes them, `decimal:2` casts as strings, and a `notes` column filled with words to the
/// byte. Items are created with their order, so they share its timestamps; that repetition is what makes
/// these events compress better than [`order`].
pub fn eloquent(nanos: u64, seq: u64, payload: usize) -> String {
    let mut r = Mix(seq ^ 0x5eed_e10f);
    let stamp = stamp::make_data(nanos, seq, 0);
    let (order_id, user_id) = (1_000 + r.below(99_000), 1 + r.below(9_999));
    let (first, last) = (r.pick(&FIRST), r.pick(&LAST));
    let created = Moment::random(&mut r);
    let shipped = created.later(&mut r);
    let user = format!(
        r#"{{"id":{user_id},"name":"{first} {last}","email":"{}.{}@example.com","email_verified_at":"{}","created_at":"{}","updated_at":"{}"}}"#,
        first.to_ascii_lowercase(),
        last.to_ascii_lowercase(),
        Moment::random(&mut r),
        Moment::random(&mut r),
        Moment::random(&mut r),
    );
    let status = r.pick(&STATUSES);
    let render = |items: &[(String, u64)], notes: &str| {
        let subtotal: u64 = items.iter().map(|(_, cents)| cents).sum();
        let tax = subtotal / 5;
        let rows: Vec<&str> = items.iter().map(|(row, _)| row.as_str()).collect();
        format!(
            r#"{{"t":"{stamp}","order":{{"id":{order_id},"user_id":{user_id},"status":"{status}","subtotal":"{}","tax":"{}","total":"{}","currency":"EUR","notes":"{notes}","shipped_at":"{shipped}","created_at":"{created}","updated_at":"{shipped}","user":{user},"items":[{}]}},"socket":null}}"#,
            Money(subtotal),
            Money(tax),
            Money(subtotal + tax),
            rows.join(","),
        )
    };
    let mut items: Vec<(String, u64)> = Vec::new();
    loop {
        let (quantity, price) = (1 + r.below(4), 199 + r.below(9_800));
        let row = format!(
            r#"{{"id":{},"order_id":{order_id},"product_id":{},"quantity":{quantity},"unit_price":"{}","created_at":"{created}","updated_at":"{created}"}}"#,
            10_000 + r.below(990_000),
            1 + r.below(999),
            Money(price),
        );
        items.push((row, quantity * price));
        // Room for a short note at least; one item whatever the size.
        if items.len() > 1 && render(&items, "").len() + 16 > payload {
            items.pop();
            break;
        }
    }
    let room = payload.saturating_sub(render(&items, "").len());
    render(&items, &words(&mut r, room))
}

/// Words of a delivery note, `room` bytes of them exactly.
fn words(r: &mut Mix, room: usize) -> String {
    let mut note = String::with_capacity(room + 16);
    while note.len() < room {
        if !note.is_empty() {
            note.push(' ');
        }
        note.push_str(r.pick(&WORDS));
    }
    note.truncate(room);
    note
}

/// A time in November 2026, written as Eloquent serializes timestamps.
#[derive(Clone, Copy)]
struct Moment {
    day: u64,
    second: u64,
}

impl Moment {
    fn random(r: &mut Mix) -> Self {
        Moment { day: 1 + r.below(20), second: r.below(86_400) }
    }
    /// The same day or up to eight days on.
    fn later(self, r: &mut Mix) -> Self {
        Moment { day: self.day + r.below(9), second: r.below(86_400) }
    }
}

impl std::fmt::Display for Moment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.second;
        write!(f, "2026-11-{:02}T{:02}:{:02}:{:02}.000000Z", self.day, s / 3_600, s / 60 % 60, s % 60)
    }
}

/// Cents as a `decimal:2` column: `12.30`.
struct Money(u64);

impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_a_frame(data: &str) -> String {
        // As the API receives it (a JSON string) and as a subscriber sees it (inside the event).
        format!(r#"{{"event":"bench","data":{}}}"#, serde_json::to_string(data).unwrap_or_default())
    }

    #[test]
    fn orders_are_valid_different_and_exactly_the_size_asked() {
        let (a, b) = (order(42, 1, 1024), order(42, 2, 1024));
        assert_eq!((a.len(), b.len()), (1024, 1024));
        assert_ne!(a, b);
        let v: serde_json::Value = serde_json::from_str(&a).expect("valid JSON");
        assert!(v["order"]["items"].as_array().is_some_and(|items| items.len() >= 5), "{a}");
        assert_eq!(stamp::find_stamp(&in_a_frame(&a)), Some(42));
        // Small sizes give the smallest order, never a broken one.
        assert!(serde_json::from_str::<serde_json::Value>(&order(1, 1, 10)).is_ok());
    }

    #[test]
    fn eloquent_models_are_valid_different_and_exactly_the_size_asked() {
        for size in [1024, 2048, 8192] {
            let (a, b) = (eloquent(42, 1, size), eloquent(42, 2, size));
            assert_eq!((a.len(), b.len()), (size, size), "{a}");
            assert_ne!(a, b);
            let v: serde_json::Value = serde_json::from_str(&a).expect("valid JSON");
            let items = v["order"]["items"].as_array().cloned().unwrap_or_default();
            assert!(items.len() >= 2, "{a}");
            assert!(items.iter().all(|item| item["order_id"] == v["order"]["id"]), "{a}");
            assert!(v["socket"].is_null() && v["order"]["user"]["email"].is_string(), "{a}");
            // Totals add up, as a real order's do.
            let cents = |s: &serde_json::Value| s.as_str().and_then(|s| s.replace('.', "").parse::<u64>().ok());
            let subtotal: u64 =
                items.iter().map(|i| i["quantity"].as_u64().unwrap_or(0) * cents(&i["unit_price"]).unwrap_or(0)).sum();
            assert_eq!(cents(&v["order"]["subtotal"]), Some(subtotal), "{a}");
            assert_eq!(stamp::find_stamp(&in_a_frame(&a)), Some(42));
        }
        assert!(serde_json::from_str::<serde_json::Value>(&eloquent(1, 1, 10)).is_ok());
    }
}
