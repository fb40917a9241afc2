import Foundation
import SideTuneEngine

/// A problem with tokenizer files. `description` reads `file:line:column: message` so it can be
/// pasted into an editor; line/column are nil when the problem is not tied to one place.
public struct TokenizerError: FileLocatedError, Sendable, Equatable {
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

/// 1-based line and column of a UTF-8 byte offset, for error messages.
func lineAndColumn(of offset: Int, in bytes: [UInt8]) -> (line: Int, column: Int) {
    var line = 1
    var lineStart = 0
    for i in 0..<min(offset, bytes.count) where bytes[i] == UInt8(ascii: "\n") {
        line += 1
        lineStart = i + 1
    }
    return (line, offset - lineStart + 1)
}
