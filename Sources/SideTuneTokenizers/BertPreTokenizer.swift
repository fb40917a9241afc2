/// Settings of HF's `BertNormalizer` (tokenizer.json `normalizer`).
public struct BertNormalizerOptions: Sendable, Equatable {
    /// Drop NUL, U+FFFD and control/format/private-use characters; map whitespace to a space.
    public var cleanText: Bool
    /// Put spaces around CJK ideographs so each becomes its own word.
    public var handleChineseChars: Bool
    /// NFD, then drop nonspacing marks (Mn).
    public var stripAccents: Bool
    public var lowercase: Bool

    /// BERT uncased defaults; `strip_accents: null` in tokenizer.json means "same as lowercase".
    public init(cleanText: Bool = true, handleChineseChars: Bool = true, stripAccents: Bool? = nil, lowercase: Bool = true) {
        self.cleanText = cleanText
        self.handleChineseChars = handleChineseChars
        self.stripAccents = stripAccents ?? lowercase
        self.lowercase = lowercase
    }
}

/// BertNormalizer + BertPreTokenizer fused into one pass over Unicode scalars: text in, words
/// (as scalar runs) out. Character classes come from `BertUnicodeTables`, probed from HF.
///
/// Known gap: HF runs NFD over the whole string, which canonically reorders adjacent combining
/// marks; we decompose per scalar. This only differs when two marks that survive accent stripping
/// (not Mn for HF) with different combining classes are adjacent, which we have not seen in text.
struct BertPreTokenizer: Sendable {
    let options: BertNormalizerOptions

    // One byte of flags per BMP scalar; scalars above U+FFFF use binary search on the ranges.
    private let bmpFlags: [UInt8]
    // Scalar -> replacement after accent stripping and lower-casing (only where it changes).
    private let fold: [UInt32: [UInt32]]

    static let removed: UInt8 = 1
    static let whitespace: UInt8 = 2
    static let splitWhitespace: UInt8 = 4
    static let punctuation: UInt8 = 8
    static let chinese: UInt8 = 16
    static let folds: UInt8 = 32

    init(options: BertNormalizerOptions) {
        self.options = options
        var fold: [UInt32: [UInt32]] = [:]
        let lower = options.lowercase ? Self.parseMap(BertUnicodeTables.lowercase) : [:]
        let strip = options.stripAccents ? Self.parseMap(BertUnicodeTables.stripAccents) : [:]
        // HF order: strip accents first, then lower-case each resulting scalar.
        for key in Set(lower.keys).union(strip.keys) {
            let stripped = strip[key] ?? [key]
            var out: [UInt32] = []
            for s in stripped { out.append(contentsOf: lower[s] ?? [s]) }
            if out != [key] { fold[key] = out }
        }
        if options.stripAccents {
            for s in UInt32(0xAC00)...0xD7A3 { fold[s] = Self.decomposeHangul(s) }
        }
        self.fold = fold

        var flags = [UInt8](repeating: 0, count: 0x10000)
        func mark(_ ranges: [UInt32], _ flag: UInt8) {
            var i = 0
            while i < ranges.count {
                let lo = ranges[i], hi = min(ranges[i + 1], 0xFFFF)
                if lo <= 0xFFFF { for s in lo...hi { flags[Int(s)] |= flag } }
                i += 2
            }
        }
        mark(BertUnicodeTables.removedByCleanText, Self.removed)
        mark(BertUnicodeTables.whitespace, Self.whitespace)
        mark(BertUnicodeTables.splitWhitespace, Self.splitWhitespace)
        mark(BertUnicodeTables.punctuation, Self.punctuation)
        mark(BertUnicodeTables.chinese, Self.chinese)
        for key in fold.keys where key <= 0xFFFF { flags[Int(key)] |= Self.folds }
        bmpFlags = flags
    }

    /// Hangul syllable -> conjoining jamo (Unicode chapter 3.12), as NFD does.
    static func decomposeHangul(_ s: UInt32) -> [UInt32] {
        let index = s - 0xAC00
        let l = 0x1100 + index / 588, v = 0x1161 + (index % 588) / 28, t = 0x11A7 + index % 28
        return t == 0x11A7 ? [l, v] : [l, v, t]
    }

    /// Parses the generated `SCALAR:OUT OUT;` hex table.
    static func parseMap(_ table: String) -> [UInt32: [UInt32]] {
        var map: [UInt32: [UInt32]] = [:]
        for entry in table.split(whereSeparator: { $0 == ";" || $0 == "\n" }) {
            let trimmed = entry.trimmingWhitespace()
            if trimmed.isEmpty { continue }
            let parts = trimmed.split(separator: ":", omittingEmptySubsequences: false)
            // The table is generated; a parse failure is a programming error, not bad input.
            guard parts.count == 2, let key = UInt32(parts[0], radix: 16) else {
                preconditionFailure("BertUnicodeTables: malformed entry \(trimmed)")
            }
            map[key] = parts[1].split(separator: " ").map { UInt32($0, radix: 16)! }
        }
        return map
    }

    @inline(__always)
    func flags(_ s: UInt32) -> UInt8 {
        if s <= 0xFFFF { return bmpFlags[Int(s)] }
        var f: UInt8 = 0
        if Self.inRanges(BertUnicodeTables.removedByCleanText, s) { f |= Self.removed }
        if Self.inRanges(BertUnicodeTables.whitespace, s) { f |= Self.whitespace }
        if Self.inRanges(BertUnicodeTables.splitWhitespace, s) { f |= Self.splitWhitespace }
        if Self.inRanges(BertUnicodeTables.punctuation, s) { f |= Self.punctuation }
        if Self.inRanges(BertUnicodeTables.chinese, s) { f |= Self.chinese }
        if fold[s] != nil { f |= Self.folds }
        return f
    }

    static func inRanges(_ pairs: [UInt32], _ s: UInt32) -> Bool {
        var lo = 0, hi = pairs.count / 2 - 1
        while lo <= hi {
            let mid = (lo + hi) / 2
            if s < pairs[2 * mid] { hi = mid - 1 } else if s > pairs[2 * mid + 1] { lo = mid + 1 } else { return true }
        }
        return false
    }

    /// Normalizes `scalars` and calls `word` with the scalars of each pre-token (a word or a
    /// single punctuation character). The pointer is only valid during the call.
    func words(_ scalars: UnsafeBufferPointer<UInt32>, _ word: (UnsafeBufferPointer<UInt32>) -> Void) {
        var current: [UInt32] = []
        current.reserveCapacity(64)
        @inline(__always) func endWord() {
            if !current.isEmpty {
                current.withUnsafeBufferPointer(word)
                current.removeAll(keepingCapacity: true)
            }
        }
        // Pre-tokenizer step on one normalized scalar.
        @inline(__always) func emit(_ s: UInt32) {
            let f = s < 0x80 ? Self.asciiClass(s) : flags(s)
            if f & Self.splitWhitespace != 0 {
                endWord()
            } else if f & Self.punctuation != 0 {
                endWord()
                current.append(s)
                endWord()
            } else {
                current.append(s)
            }
        }
        for raw in scalars {
            if raw < 0x80 {
                // ASCII fast path: no accents, lower-casing is +32.
                if options.cleanText && (raw == 0 || raw == 0x7F || (raw < 0x20 && raw != 9 && raw != 10 && raw != 13)) { continue }
                var s = raw
                if options.cleanText && (s == 9 || s == 10 || s == 13) { s = 0x20 }
                if options.lowercase && s >= 0x41 && s <= 0x5A { s += 0x20 }
                emit(s)
                continue
            }
            let f = flags(raw)
            if options.cleanText {
                if f & Self.removed != 0 { continue }
                if f & Self.whitespace != 0 { emit(0x20); continue }
            }
            // HF pads CJK ideographs with spaces before accent stripping, so each is its own word.
            let isChinese = options.handleChineseChars && f & Self.chinese != 0
            if isChinese { endWord() }
            if f & Self.folds != 0, let out = fold[raw] {
                for s in out { emit(s) }
            } else {
                emit(raw)
            }
            if isChinese { endWord() }
        }
        endWord()
    }

    @inline(__always)
    static func asciiClass(_ s: UInt32) -> UInt8 {
        switch s {
        case 9, 10, 11, 12, 13, 32: return splitWhitespace
        case 33...47, 58...64, 91...96, 123...126: return punctuation
        default: return 0
        }
    }
}

extension Substring {
    func trimmingWhitespace() -> Substring {
        var s = self
        while let c = s.first, c.isWhitespace { s = s.dropFirst() }
        while let c = s.last, c.isWhitespace { s = s.dropLast() }
        return s
    }
}
