import Foundation

/// Token strings <-> ids, plus two scalar tries (word-initial tokens and `##` continuations) so
/// greedy longest-match-first is one walk per piece instead of one dictionary probe per length.
struct WordPieceVocabulary: Sendable {
    let tokens: [String]
    let ids: [String: Int32]
    let continuingPrefix: String

    // Trie: node n's child on scalar s is edges[(n << 21) | s]; terminal[n] is the token id or -1.
    private let edges: [UInt64: Int32]
    private let terminal: [Int32]
    let initialRoot: Int32 = 0
    let continuationRoot: Int32 = 1

    /// `tokens[i]` has id i. Throws on duplicates (HF would silently keep the later id).
    init(tokens: [String], continuingPrefix: String, file: String, lineOf: (Int) -> Int? = { _ in nil }) throws {
        var ids: [String: Int32] = [:]
        ids.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() {
            if let previous = ids[t] {
                let first = lineOf(Int(previous)).map { " (first at line \($0))" } ?? " (first id \(previous))"
                throw TokenizerError(file: file, line: lineOf(i), "duplicate token \"\(t)\" with id \(i)\(first)")
            }
            ids[t] = Int32(i)
        }
        self.init(tokens: tokens, ids: ids, continuingPrefix: continuingPrefix)
    }

    /// Builds from an explicit token -> id map (tokenizer.json); ids need not be dense.
    init(ids: [String: Int32], continuingPrefix: String, file: String) throws {
        guard let maxID = ids.values.max() else { throw TokenizerError(file: file, "model.vocab is empty") }
        // Each unused id below the largest costs a placeholder: a stray huge id would allocate gigabytes.
        guard Int(maxID) < ids.count + 1 << 16 else {
            throw TokenizerError(file: file,
                                 "model.vocab: id \(maxID) leaves more than 65536 ids unused (\(ids.count) tokens)")
        }
        var tokens = [String?](repeating: nil, count: Int(maxID) + 1)
        for (t, id) in ids {
            guard id >= 0 else { throw TokenizerError(file: file, "model.vocab: token \"\(t)\" has negative id \(id)") }
            if let other = tokens[Int(id)] {
                throw TokenizerError(file: file, "model.vocab: tokens \"\(other)\" and \"\(t)\" share id \(id)")
            }
            tokens[Int(id)] = t
        }
        // Holes are legal in HF; give them a placeholder that no text can produce.
        self.init(tokens: tokens.enumerated().map { $0.element ?? "<missing id \($0.offset)>" }, ids: ids, continuingPrefix: continuingPrefix)
    }

    private init(tokens: [String], ids: [String: Int32], continuingPrefix: String) {
        self.tokens = tokens
        self.ids = ids
        self.continuingPrefix = continuingPrefix
        var edges: [UInt64: Int32] = [:]
        edges.reserveCapacity(tokens.count * 4)
        var terminal: [Int32] = [-1, -1]
        let prefix = Array(continuingPrefix.unicodeScalars)
        func insert(_ scalars: some Collection<Unicode.Scalar>, root: Int32, id: Int32) {
            var node = root
            for s in scalars {
                let key = UInt64(node) << 21 | UInt64(s.value)
                if let child = edges[key] {
                    node = child
                } else {
                    let child = Int32(terminal.count)
                    terminal.append(-1)
                    edges[key] = child
                    node = child
                }
            }
            if node != root { terminal[Int(node)] = id }
        }
        for (t, id) in ids {
            let scalars = Array(t.unicodeScalars)
            insert(scalars, root: 0, id: id)
            if prefix.isEmpty {
                insert(scalars, root: 1, id: id)
            } else if scalars.count > prefix.count, scalars.starts(with: prefix) {
                insert(scalars[prefix.count...], root: 1, id: id)
            }
        }
        self.edges = edges
        self.terminal = terminal
    }

    /// Longest vocabulary entry that is a prefix of `word[start..<end]`, walking from `root`.
    /// Returns (matched end, id) or nil.
    @inline(__always)
    func longestMatch(_ word: UnsafeBufferPointer<UInt32>, from start: Int, to end: Int, root: Int32) -> (end: Int, id: Int32)? {
        var node = root
        var best: (Int, Int32)? = nil
        var i = start
        while i < end {
            guard let child = edges[UInt64(node) << 21 | UInt64(word[i])] else { break }
            node = child
            i += 1
            let id = terminal[Int(node)]
            if id >= 0 { best = (i, id) }
        }
        return best
    }
}
