/// Sorted distinct label strings <-> class ids 0..<count. Sorting makes the mapping independent
/// of row order, so a saved model and a reloaded data set agree on what class 2 means.
public struct LabelVocabulary: Sendable, Equatable, Codable {
    public let labels: [String]
    private let ids: [String: Int]

    /// Distinct values of `labels`, sorted by Unicode scalar values (locale independent).
    public init<S: Sequence>(labels: S) where S.Element == String {
        let sorted = Set(labels).sorted { Array($0.unicodeScalars.map(\.value)).lexicographicallyPrecedes($1.unicodeScalars.map(\.value)) }
        self.labels = sorted
        self.ids = Dictionary(uniqueKeysWithValues: sorted.enumerated().map { ($0.element, $0.offset) })
    }

    public var count: Int { labels.count }
    public func index(of label: String) -> Int? { ids[label] }
    public func label(for index: Int) -> String { labels[index] }

    enum CodingKeys: String, CodingKey { case labels }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let labels = try container.decode([String].self, forKey: .labels)
        guard Set(labels).count == labels.count else {
            throw DecodingError.dataCorruptedError(forKey: .labels, in: container, debugDescription: "label vocabulary has duplicate labels: \(labels)")
        }
        self.labels = labels
        self.ids = Dictionary(uniqueKeysWithValues: labels.enumerated().map { ($0.element, $0.offset) })
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(labels, forKey: .labels)
    }
}
