//! Every byte a client of an HTTP listener sends passes the framing tracker; however the
//! bytes are cut, it must agree with itself and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else { return };
    let mut whole = lb_l7::framing::Tracker::default();
    whole.feed(stream);
    let mut split = lb_l7::framing::Tracker::default();
    let at = usize::from(cut).min(stream.len());
    split.feed(&stream[..at]);
    split.feed(&stream[at..]);
    let records = |t: &mut lb_l7::framing::Tracker| std::iter::from_fn(|| t.take()).collect::<Vec<_>>();
    assert_eq!(whole.following(), split.following());
    assert_eq!(records(&mut whole), records(&mut split));
});
