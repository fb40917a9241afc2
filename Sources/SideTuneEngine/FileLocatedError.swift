/// An error about a place in a file; `description` reads `file:line:column: message` so it can be
/// pasted into an editor (line and column are left out when not known). Shared by the data loaders
/// and the tokenizers, whose errors differ only in type.
public protocol FileLocatedError: Error, CustomStringConvertible {
    var file: String { get }
    var line: Int? { get }
    var column: Int? { get }
    var message: String { get }
}

extension FileLocatedError {
    public var description: String {
        var location = file
        if let line { location += ":\(line)" }
        if let column { location += ":\(column)" }
        return "\(location): \(message)"
    }
}
