/// One record of a delimited file: raw field bytes and where it starts.
struct RawRecord {
    var fields: [ArraySlice<UInt8>]
    /// 1-based physical line where the record starts.
    var line: Int
    /// Set when the record is malformed (e.g. an unterminated quote); fields are then partial.
    var problem: String?
}

/// RFC 4180 reader over bytes. Works on bytes so invalid UTF-8 can be repaired per field later;
/// the structural characters are all ASCII, which never occur inside a multi-byte sequence.
///
/// - Records end at LF, CRLF or a bare CR (as Python's csv module does) outside quotes.
/// - `"..."` fields may hold delimiters, newlines and `""` (an escaped quote).
/// - A quote inside an unquoted field is kept literally, like Python's csv and Excel.
/// - With `quoting == false` (TSV) quotes are ordinary characters.
struct DelimitedReader {
    let bytes: [UInt8]
    let delimiter: UInt8
    let quoting: Bool

    private static let quote = UInt8(ascii: "\"")
    private static let lf = UInt8(ascii: "\n")
    private static let cr = UInt8(ascii: "\r")

    /// Calls `body` for each non-blank record in order.
    func forEachRecord(_ body: (RawRecord) throws -> Void) rethrows {
        var i = 0
        var line = 1
        let n = bytes.count
        // Skip a UTF-8 byte order mark.
        if n >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF { i = 3 }
        while i < n {
            let recordLine = line
            var fields: [ArraySlice<UInt8>] = []
            var problem: String? = nil
            var atRecordEnd = false
            while !atRecordEnd {
                if quoting && i < n && bytes[i] == Self.quote {
                    // Quoted field: collect bytes, turning "" into ".
                    let openLine = line
                    var value: [UInt8] = []
                    var j = i + 1
                    var closed = false
                    while j < n {
                        let b = bytes[j]
                        if b == Self.quote {
                            if j + 1 < n && bytes[j + 1] == Self.quote {
                                value.append(Self.quote)
                                j += 2
                                continue
                            }
                            closed = true
                            j += 1
                            break
                        }
                        if b == Self.lf || (b == Self.cr && (j + 1 >= n || bytes[j + 1] != Self.lf)) { line += 1 }
                        value.append(b)
                        j += 1
                    }
                    fields.append(value[...])
                    i = j
                    if !closed {
                        problem = "unterminated quoted field opened at line \(openLine); the rest of the file was read into it"
                        atRecordEnd = true
                        break
                    }
                    // After the closing quote only a delimiter or a line end may follow.
                    if i < n && bytes[i] != delimiter && bytes[i] != Self.lf && bytes[i] != Self.cr {
                        if problem == nil {
                            problem = "field \(fields.count) has text after its closing quote (use \"\" for a literal quote)"
                        }
                        // Keep reading to the end of the field so the next record starts cleanly.
                        while i < n && bytes[i] != delimiter && bytes[i] != Self.lf && bytes[i] != Self.cr { i += 1 }
                    }
                } else {
                    let start = i
                    while i < n && bytes[i] != delimiter && bytes[i] != Self.lf && bytes[i] != Self.cr { i += 1 }
                    fields.append(bytes[start..<i])
                }
                // Now at a delimiter, a line end or EOF.
                if i >= n {
                    atRecordEnd = true
                } else if bytes[i] == delimiter {
                    i += 1
                } else {
                    if bytes[i] == Self.cr && i + 1 < n && bytes[i + 1] == Self.lf { i += 1 }
                    i += 1
                    line += 1
                    atRecordEnd = true
                }
            }
            // A blank line is one empty unquoted field: not a record.
            if fields.count == 1 && fields[0].isEmpty && problem == nil { continue }
            try body(RawRecord(fields: fields, line: recordLine, problem: problem))
        }
    }
}
