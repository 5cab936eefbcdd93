//! A hand-rolled decoder that turns fuzz bytes into a sequence of operations. Every read
//! succeeds (zeros once the input is spent), so any byte string is a valid script and
//! libFuzzer's mutations stay meaningful: a flipped byte changes one choice, not the framing.

#![allow(dead_code)]

pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// An index below `n` (`n > 0`).
    pub fn pick(&mut self, n: usize) -> usize {
        usize::from(self.u8()) % n
    }

    /// A slice whose length (at most `max`) is the next byte: the fuzzer's own bytes, so
    /// that comparisons in the code under test can be solved by libFuzzer's CMP tracing.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let len = usize::from(self.u8()).min(max).min(self.data.len());
        let (head, rest) = self.data.split_at(len);
        self.data = rest;
        head
    }

    /// Like [`Input::bytes`] with a two-byte length, for payloads past 255 bytes.
    pub fn long_bytes(&mut self, max: usize) -> &'a [u8] {
        let len = usize::from(self.u16()).min(max).min(self.data.len());
        let (head, rest) = self.data.split_at(len);
        self.data = rest;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    /// Text from [`Input::bytes`]; invalid UTF-8 is replaced, as a WebSocket layer would
    /// have refused it anyway.
    pub fn text(&mut self, max: usize) -> String {
        String::from_utf8_lossy(self.bytes(max)).into_owned()
    }
}
