import Foundation
import SideTuneEngine

/// A problem with a data file. `description` reads `file:line:column: message`.
public struct DataError: FileLocatedError, Sendable, Equatable {
    public let file: String
    public let line: Int?
    public let column: Int?
    public let message: String

    public init(file: String, line: Int? = nil, column: Int? = nil, _ message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
    }
}

public enum DataFormat: String, Sendable, Codable {
    case csv, tsv, jsonl

    /// From the file extension: .csv, .tsv/.tab, .jsonl/.ndjson.
    public static func infer(from url: URL) -> DataFormat? {
        switch url.pathExtension.lowercased() {
        case "csv": return .csv
        case "tsv", "tab": return .tsv
        case "jsonl", "ndjson": return .jsonl
        default: return nil
        }
    }
}

public struct LoadOptions: Sendable {
    public var textColumn: String
    public var labelColumn: String
    /// Second text of a pair (e.g. premise/hypothesis), if any.
    public var pairColumn: String?
    /// nil: infer from the file extension.
    public var format: DataFormat?
    /// Throw on the first malformed row instead of skipping it.
    public var strict: Bool

    public init(textColumn: String = "text", labelColumn: String = "label", pairColumn: String? = nil,
                format: DataFormat? = nil, strict: Bool = false) {
        self.textColumn = textColumn
        self.labelColumn = labelColumn
        self.pairColumn = pairColumn
        self.format = format
        self.strict = strict
    }
}

public struct SkippedRow: Sendable, Equatable, Codable {
    /// 1-based line where the row starts.
    public let line: Int
    public let reason: String
    public init(line: Int, reason: String) {
        self.line = line
        self.reason = reason
    }
}

public struct LoadReport: Sendable, Equatable, Codable {
    /// Data rows seen (header and blank lines excluded), kept or skipped.
    public var rowsRead = 0
    public var rowsKept = 0
    public var skippedCount = 0
    /// The first `maxListedSkips` skipped rows with reasons.
    public var skipped: [SkippedRow] = []
    /// Rows in which at least one invalid UTF-8 sequence was replaced by U+FFFD.
    public var repairedRows = 0
    /// U+FFFD characters inserted (one per maximal invalid byte sequence).
    public var replacementCharacters = 0

    public static let maxListedSkips = 20

    public init() {}

    mutating func skip(line: Int, _ reason: String) {
        skippedCount += 1
        if skipped.count < Self.maxListedSkips { skipped.append(SkippedRow(line: line, reason: reason)) }
    }

    public var summary: String {
        var s = "read \(rowsRead) rows, kept \(rowsKept), skipped \(skippedCount)"
        if repairedRows > 0 { s += ", repaired invalid UTF-8 in \(repairedRows) rows (\(replacementCharacters) U+FFFD)" }
        for row in skipped { s += "\n  line \(row.line): \(row.reason)" }
        if skippedCount > skipped.count { s += "\n  ... and \(skippedCount - skipped.count) more" }
        return s
    }
}

/// Labelled texts ready for a classifier. `labels[i]` indexes `labelVocabulary.labels`.
public struct TextDataset: Sendable {
    public var texts: [String]
    public var pairs: [String]?
    public var labels: [Int]
    public var labelVocabulary: LabelVocabulary
    public var report: LoadReport

    public init(texts: [String], pairs: [String]? = nil, labels: [Int], labelVocabulary: LabelVocabulary, report: LoadReport = LoadReport()) {
        precondition(texts.count == labels.count && (pairs == nil || pairs!.count == texts.count),
                     "TextDataset: \(texts.count) texts, \(labels.count) labels, \(pairs?.count ?? -1) pairs")
        self.texts = texts
        self.pairs = pairs
        self.labels = labels
        self.labelVocabulary = labelVocabulary
        self.report = report
    }

    public var count: Int { texts.count }

    /// Examples per class, indexed like `labelVocabulary.labels`.
    public var classCounts: [Int] {
        var counts = [Int](repeating: 0, count: labelVocabulary.count)
        for l in labels { counts[l] += 1 }
        return counts
    }

    /// Rows at `indices`, in that order, with the same label vocabulary.
    public func subset(_ indices: [Int]) -> TextDataset {
        TextDataset(texts: indices.map { texts[$0] }, pairs: pairs.map { p in indices.map { p[$0] } },
                    labels: indices.map { labels[$0] }, labelVocabulary: labelVocabulary, report: report)
    }

    // MARK: Loading

    public static func load(_ url: URL, options: LoadOptions) throws -> TextDataset {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw DataError(file: url.path, "cannot read file: \(error.localizedDescription)")
        }
        guard let format = options.format ?? DataFormat.infer(from: url) else {
            throw DataError(file: url.path, "cannot tell the format from extension \".\(url.pathExtension)\"; set LoadOptions.format (csv, tsv or jsonl)")
        }
        var options = options
        options.format = format
        return try load(bytes: [UInt8](data), fileName: url.lastPathComponent, options: options)
    }

    /// Parses file contents. `fileName` is only used in messages; `options.format` defaults to CSV.
    public static func load(bytes: [UInt8], fileName: String, options: LoadOptions) throws -> TextDataset {
        var builder = Builder(file: fileName, options: options)
        switch options.format ?? .csv {
        case .csv: try builder.readDelimited(bytes, delimiter: UInt8(ascii: ","), quoting: true)
        case .tsv: try builder.readDelimited(bytes, delimiter: UInt8(ascii: "\t"), quoting: false)
        case .jsonl: try builder.readJSONLines(bytes)
        }
        return try builder.finish()
    }
}

/// Accumulates rows and the report while a file is parsed.
private struct Builder {
    let file: String
    let options: LoadOptions
    var texts: [String] = []
    var pairs: [String] = []
    var labelStrings: [String] = []
    var report = LoadReport()
    var sawHeader = false

    init(file: String, options: LoadOptions) {
        self.file = file
        self.options = options
    }

    mutating func malformed(line: Int, _ reason: String) throws {
        if options.strict { throw DataError(file: file, line: line, reason) }
        report.skip(line: line, reason)
    }

    /// Decodes UTF-8, replacing invalid sequences with U+FFFD; returns how many were inserted.
    static func decode(_ bytes: ArraySlice<UInt8>) -> (String, Int) {
        if let s = String(validating: bytes, as: UTF8.self) { return (s, 0) }
        let repaired = String(decoding: bytes, as: UTF8.self)
        // U+FFFD that were already in the input (EF BF BD) are not repairs.
        var original = 0
        var i = bytes.startIndex
        while i + 2 < bytes.endIndex {
            if bytes[i] == 0xEF && bytes[i + 1] == 0xBF && bytes[i + 2] == 0xBD { original += 1; i += 3 } else { i += 1 }
        }
        let total = repaired.unicodeScalars.reduce(0) { $0 + ($1.value == 0xFFFD ? 1 : 0) }
        return (repaired, total - original)
    }

    mutating func readDelimited(_ bytes: [UInt8], delimiter: UInt8, quoting: Bool) throws {
        var header: [String] = []
        var textIndex = 0, labelIndex = 0
        var pairIndex: Int? = nil
        let kind = quoting ? "CSV" : "TSV"
        try DelimitedReader(bytes: bytes, delimiter: delimiter, quoting: quoting).forEachRecord { record in
            if !sawHeader {
                sawHeader = true
                if let problem = record.problem { throw DataError(file: file, line: record.line, "header row: \(problem)") }
                header = record.fields.map { Self.decode($0).0.trimmingCharacters(in: .whitespaces) }
                func column(_ name: String, _ role: String) throws -> Int {
                    guard let i = header.firstIndex(of: name) else {
                        throw DataError(file: file, line: record.line, "\(role) column \"\(name)\" not found; the \(kind) header has: \(header.map { "\"\($0)\"" }.joined(separator: ", "))")
                    }
                    return i
                }
                textIndex = try column(options.textColumn, "text")
                labelIndex = try column(options.labelColumn, "label")
                pairIndex = try options.pairColumn.map { try column($0, "pair") }
                return
            }
            report.rowsRead += 1
            if let problem = record.problem { return try malformed(line: record.line, problem) }
            guard record.fields.count == header.count else {
                return try malformed(line: record.line, "expected \(header.count) fields (\(header.joined(separator: ","))), found \(record.fields.count)")
            }
            let (text, r1) = Self.decode(record.fields[textIndex])
            let (label, r2) = Self.decode(record.fields[labelIndex])
            var pair: String? = nil
            var r3 = 0
            if let pairIndex { (pair, r3) = Self.decode(record.fields[pairIndex]) }
            try add(line: record.line, text: text, pair: pair, label: label, repairs: r1 + r2 + r3)
        }
        if !sawHeader { throw DataError(file: file, "file is empty; expected a header row naming the columns") }
    }

    mutating func readJSONLines(_ bytes: [UInt8]) throws {
        var lineNumber = 0
        var start = 0
        var keysSeen: Set<String> = []
        var sawText = false, sawLabel = false, sawPair = false
        while start < bytes.count {
            let end = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.count
            lineNumber += 1
            var lineBytes = bytes[start..<end]
            start = end + 1
            if lineNumber == 1, lineBytes.starts(with: [0xEF, 0xBB, 0xBF]) { lineBytes = lineBytes.dropFirst(3) }
            if lineBytes.last == UInt8(ascii: "\r") { lineBytes = lineBytes.dropLast() }
            if lineBytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
            report.rowsRead += 1
            let (lineText, repairs) = Self.decode(lineBytes)
            let object: [String: Any]
            do {
                guard let o = try JSONSerialization.jsonObject(with: Data(lineText.utf8)) as? [String: Any] else {
                    try malformed(line: lineNumber, "expected a JSON object per line")
                    continue
                }
                object = o
            } catch let error as DataError {
                throw error
            } catch {
                var reason = "invalid JSON"
                let ns = error as NSError
                // Darwin gives the offset in userInfo; swift-corelibs only in the text ("around character 12").
                var index = ns.userInfo["NSJSONSerializationErrorIndex"] as? Int
                if index == nil, let debug = ns.userInfo[NSDebugDescriptionErrorKey] as? String,
                   let range = debug.range(of: #"character \d+"#, options: .regularExpression) {
                    index = Int(debug[range].dropFirst("character ".count))
                }
                if let index { reason += " at column \(index + 1)" }
                try malformed(line: lineNumber, reason)
                continue
            }
            keysSeen.formUnion(object.keys)
            func string(_ key: String) -> String? {
                switch object[key] {
                case let s as String: return s
                case let n as NSNumber: return n.stringValue  // numeric labels such as 0/1
                default: return nil
                }
            }
            let text = object[options.textColumn] as? String
            let label = string(options.labelColumn)
            sawText = sawText || object[options.textColumn] != nil
            sawLabel = sawLabel || object[options.labelColumn] != nil
            let pair = options.pairColumn.flatMap { object[$0] as? String }
            if let p = options.pairColumn { sawPair = sawPair || object[p] != nil }
            guard let text else {
                try malformed(line: lineNumber, object[options.textColumn] == nil ? "missing key \"\(options.textColumn)\"" : "\"\(options.textColumn)\" is not a string")
                continue
            }
            if let p = options.pairColumn, pair == nil {
                try malformed(line: lineNumber, "missing or non-string pair key \"\(p)\"")
                continue
            }
            try add(line: lineNumber, text: text, pair: pair, label: label ?? "", repairs: repairs)
        }
        if report.rowsRead == 0 { throw DataError(file: file, "file is empty; expected one JSON object per line") }
        // A key that no row has is a configuration error, not a row problem.
        let keys = keysSeen.sorted().map { "\"\($0)\"" }.joined(separator: ", ")
        if !sawText && !keysSeen.isEmpty { throw DataError(file: file, "text key \"\(options.textColumn)\" not found in any row; keys seen: \(keys)") }
        if !sawLabel && !keysSeen.isEmpty { throw DataError(file: file, "label key \"\(options.labelColumn)\" not found in any row; keys seen: \(keys)") }
        if let p = options.pairColumn, !sawPair, !keysSeen.isEmpty { throw DataError(file: file, "pair key \"\(p)\" not found in any row; keys seen: \(keys)") }
    }

    mutating func add(line: Int, text: String, pair: String?, label: String, repairs: Int) throws {
        let label = label.trimmingCharacters(in: .whitespacesAndNewlines)
        if label.isEmpty { return try malformed(line: line, "missing label (column \"\(options.labelColumn)\" is empty)") }
        if text.allSatisfy({ $0.isWhitespace }) { return try malformed(line: line, "empty text (column \"\(options.textColumn)\")") }
        if let pair, pair.allSatisfy({ $0.isWhitespace }) {
            return try malformed(line: line, "empty pair text (column \"\(options.pairColumn ?? "")\")")
        }
        if repairs > 0 {
            report.repairedRows += 1
            report.replacementCharacters += repairs
        }
        texts.append(text)
        if let pair { pairs.append(pair) }
        labelStrings.append(label)
        report.rowsKept += 1
    }

    func finish() throws -> TextDataset {
        guard !texts.isEmpty else {
            throw DataError(file: file, "no usable rows (\(report.rowsRead) read, \(report.skippedCount) skipped)\n\(report.summary)")
        }
        let vocabulary = LabelVocabulary(labels: labelStrings)
        guard vocabulary.count >= 2 else {
            // Skipped rows may be why (an unterminated quote swallows the rest of the file): list them.
            let skips = report.skippedCount > 0 ? "\n\(report.summary)" : ""
            throw DataError(file: file, "all \(texts.count) rows have the same label \"\(vocabulary.labels[0])\"; classification needs at least two classes\(skips)")
        }
        return TextDataset(texts: texts, pairs: options.pairColumn == nil ? nil : pairs,
                           labels: labelStrings.map { vocabulary.index(of: $0)! }, labelVocabulary: vocabulary, report: report)
    }
}
