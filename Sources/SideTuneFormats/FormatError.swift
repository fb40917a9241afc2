/// A file that is not what its format says. `description` names the file, the tensor (when one is
/// to blame) and what was expected, so a user can tell a truncated download from a wrong file.
public struct FormatError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What went wrong; tests and callers can switch on it without parsing the message.
    public enum Kind: String, Sendable, Equatable {
        /// The file could not be opened, mapped or written.
        case io
        /// The 8-byte header length is over the limit or past the end of the file.
        case headerLength
        /// The header is not the JSON object the format requires.
        case badHeader
        /// A tensor's dtype is not one this reader maps.
        case unknownDType
        /// shape x dtype size differs from the tensor's byte length.
        case shapeMismatch
        /// data_offsets are reversed or malformed.
        case badOffsets
        /// data_offsets point past the end of the data section (usually a cut-off download).
        case truncated
        /// Two tensors share bytes.
        case overlap
        /// A tensor name that the file does not hold.
        case missingTensor
        /// A request the file cannot serve (e.g. converting an unsupported dtype).
        case unsupported
    }

    public let kind: Kind
    public let file: String
    public let tensor: String?
    public let message: String

    public init(_ kind: Kind, file: String, tensor: String? = nil, _ message: String) {
        self.kind = kind
        self.file = file
        self.tensor = tensor
        self.message = message
    }

    public var description: String {
        if let tensor { return "\(file): tensor '\(tensor)': \(message)" }
        return "\(file): \(message)"
    }
}
