// A small strict JSON reader/writer for format headers (safetensors now, others later). Our own
// rather than JSONSerialization so that objects keep key order, duplicate keys are caught, and
// integers stay exact Ints instead of NSNumber doubles.

/// A parsed JSON value. Objects keep their keys in file order; numbers keep their source text.
public enum JSONValue: Equatable {
    case object([(key: String, value: JSONValue)])
    case array([JSONValue])
    case string(String)
    case number(String)
    case bool(Bool)
    case null

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case let (.object(x), .object(y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        case let (.array(x), .array(y)): return x == y
        case let (.string(x), .string(y)): return x == y
        case let (.number(x), .number(y)): return x == y
        case let (.bool(x), .bool(y)): return x == y
        case (.null, .null): return true
        default: return false
        }
    }

    /// The value as an exact integer, nil for non-integers (1.0, 1e3) or out-of-range values.
    public var intValue: Int? {
        if case let .number(text) = self { return Int(text) }
        return nil
    }

    public var stringValue: String? {
        if case let .string(s) = self { return s }
        return nil
    }

    /// Short name of the value's kind, for error messages.
    public var kindName: String {
        switch self {
        case .object: return "object"
        case .array: return "array"
        case .string: return "string"
        case .number: return "number"
        case .bool: return "boolean"
        case .null: return "null"
        }
    }
}

public struct JSONParseError: Error {
    public let message: String
    public let offset: Int
}

/// Recursive-descent parser over raw bytes (RFC 8259; no extensions).
public struct JSONParser {
    private let bytes: UnsafeRawBufferPointer
    private var pos = 0
    private var depth = 0
    /// Deep nesting would only come from a hostile file; stop before the stack does.
    private let maxDepth = 64

    /// Parses exactly one value; only whitespace may follow it.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(JSONParseError) -> JSONValue {
        var p = JSONParser(bytes: bytes)
        p.skipWhitespace()
        let v = try p.value()
        p.skipWhitespace()
        if p.pos != bytes.count { throw p.fail("unexpected data after the JSON value") }
        return v
    }

    private init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    private func fail(_ message: String) -> JSONParseError {
        JSONParseError(message: message, offset: pos)
    }

    private var peek: UInt8? { pos < bytes.count ? bytes[pos] : nil }

    private mutating func skipWhitespace() {
        while let c = peek, c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { pos += 1 }
    }

    private mutating func expect(_ c: UInt8) throws(JSONParseError) {
        guard peek == c else {
            throw fail("expected '\(Character(Unicode.Scalar(c)))'" + (peek.map { " but found '\(Character(Unicode.Scalar($0)))'" } ?? " but the text ended"))
        }
        pos += 1
    }

    private mutating func value() throws(JSONParseError) -> JSONValue {
        guard let c = peek else { throw fail("expected a value but the text ended") }
        switch c {
        case UInt8(ascii: "{"): return try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        default: throw fail("unexpected character '\(Character(Unicode.Scalar(c)))'")
        }
    }

    private mutating func literal(_ word: StaticString) throws(JSONParseError) {
        let w = UnsafeRawBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
        guard pos + w.count <= bytes.count, (0..<w.count).allSatisfy({ bytes[pos + $0] == w[$0] }) else {
            throw fail("invalid literal")
        }
        pos += w.count
    }

    private mutating func object() throws(JSONParseError) -> JSONValue {
        depth += 1
        if depth > maxDepth { throw fail("nesting deeper than \(maxDepth)") }
        defer { depth -= 1 }
        pos += 1
        var members: [(key: String, value: JSONValue)] = []
        var seen = Set<String>()
        skipWhitespace()
        if peek == UInt8(ascii: "}") { pos += 1; return .object(members) }
        while true {
            skipWhitespace()
            guard peek == UInt8(ascii: "\"") else { throw fail("expected a string key") }
            let keyPos = pos
            let key = try string()
            if !seen.insert(key).inserted { throw JSONParseError(message: "duplicate key \"\(key)\"", offset: keyPos) }
            skipWhitespace()
            try expect(UInt8(ascii: ":"))
            skipWhitespace()
            members.append((key, try value()))
            skipWhitespace()
            if peek == UInt8(ascii: ",") { pos += 1; continue }
            try expect(UInt8(ascii: "}"))
            return .object(members)
        }
    }

    private mutating func array() throws(JSONParseError) -> JSONValue {
        depth += 1
        if depth > maxDepth { throw fail("nesting deeper than \(maxDepth)") }
        defer { depth -= 1 }
        pos += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if peek == UInt8(ascii: "]") { pos += 1; return .array(items) }
        while true {
            skipWhitespace()
            items.append(try value())
            skipWhitespace()
            if peek == UInt8(ascii: ",") { pos += 1; continue }
            try expect(UInt8(ascii: "]"))
            return .array(items)
        }
    }

    private mutating func number() throws(JSONParseError) -> JSONValue {
        let start = pos
        if peek == UInt8(ascii: "-") { pos += 1 }
        func digits(_ p: inout JSONParser) -> Int {
            let s = p.pos
            while let c = p.peek, c >= 0x30, c <= 0x39 { p.pos += 1 }
            return p.pos - s
        }
        let intStart = pos
        let n = digits(&self)
        if n == 0 { throw fail("invalid number") }
        if n > 1 && bytes[intStart] == UInt8(ascii: "0") { throw fail("leading zero in number") }
        if peek == UInt8(ascii: ".") {
            pos += 1
            if digits(&self) == 0 { throw fail("invalid number: no digits after '.'") }
        }
        if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
            pos += 1
            if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { pos += 1 }
            if digits(&self) == 0 { throw fail("invalid number: no exponent digits") }
        }
        return .number(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<pos]), as: UTF8.self))
    }

    private mutating func hex4() throws(JSONParseError) -> UInt32 {
        guard pos + 4 <= bytes.count else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[pos]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw fail("invalid hex digit in \\u escape")
            }
            v = v << 4 | d
            pos += 1
        }
        return v
    }

    private mutating func string() throws(JSONParseError) -> String {
        pos += 1  // opening quote
        var out: [UInt8] = []
        while true {
            guard let c = peek else { throw fail("unterminated string") }
            pos += 1
            if c == UInt8(ascii: "\"") { break }
            if c < 0x20 { throw fail("control character in string") }
            if c != UInt8(ascii: "\\") { out.append(c); continue }
            guard let e = peek else { throw fail("unterminated escape") }
            pos += 1
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if (0xD800..<0xDC00).contains(scalar) {
                    // A high surrogate must be followed by an escaped low surrogate.
                    guard pos + 2 <= bytes.count, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") else {
                        throw fail("unpaired surrogate in \\u escape")
                    }
                    pos += 2
                    let low = try hex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw fail("unpaired surrogate in \\u escape") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00..<0xE000).contains(scalar) {
                    throw fail("unpaired surrogate in \\u escape")
                }
                guard let u = Unicode.Scalar(scalar) else { throw fail("invalid \\u escape") }
                out.append(contentsOf: Array(String(Character(u)).utf8))
            default:
                throw fail("invalid escape '\\\(Character(Unicode.Scalar(e)))'")
            }
        }
        guard let s = String(validating: out, as: UTF8.self) else { throw fail("string is not valid UTF-8") }
        return s
    }
}

public enum JSONWriter {
    /// `s` as a JSON string literal: escapes quotes, backslashes and control characters only.
    public static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}
