import Testing
import SideTuneFormats

@Suite struct JSONTests {
    func parse(_ s: String) throws -> JSONValue {
        let bytes = Array(s.utf8)
        return try bytes.withUnsafeBytes { (b: UnsafeRawBufferPointer) throws -> JSONValue in try JSONParser.parse(b) }
    }

    @Test func parsesNestedValuesInOrder() throws {
        let v = try parse(#" {"b": [1, -2.5e3, true, null], "a": {"x": "y\n\u00e9\ud83d\ude00"}} "#)
        guard case let .object(members) = v else { Issue.record("not an object"); return }
        #expect(members.map(\.key) == ["b", "a"])
        #expect(members[0].value == .array([.number("1"), .number("-2.5e3"), .bool(true), .null]))
        #expect(members[1].value == .object([(key: "x", value: .string("y\né😀"))]))
        #expect(JSONValue.number("12").intValue == 12)
        #expect(JSONValue.number("1.0").intValue == nil)
    }

    @Test(arguments: [
        "{", "{\"a\":}", "{\"a\":1,}", "[1 2]", "{\"a\":1}x", "\"\\ud800\"", "01", "{\"a\":1,\"a\":2}", "tru", "\"a\u{01}\"",
        String(repeating: "[", count: 100) + String(repeating: "]", count: 100),
    ])
    func rejectsInvalid(_ text: String) {
        #expect(throws: JSONParseError.self) { try parse(text) }
    }

    @Test func quoteEscapes() throws {
        let s = "a\"b\\c\nd\u{01}é"
        #expect(try parse(JSONWriter.quote(s)) == .string(s))
    }
}
