import SideTuneEngine

/// Base class of layers and models. Parameters are the stored `Tensor` properties, children the
/// stored `Module`, `[Module]` and `Module?` properties, found by reflection (as MLX Swift does), so
/// names follow the code: `encoder.layers.0.attention.query.weight`. Properties whose names start
/// with `_` are skipped (buffers, caches, frozen references that are not ours).
open class Module {
    /// Dropout and similar layers behave differently in training; set with `train(_:)`.
    public private(set) var training = true

    public init() {}

    /// (name, parameter) for every parameter in this module and its children, depth first.
    public func namedParameters() -> [(String, Tensor)] {
        var out: [(String, Tensor)] = []
        collect(prefix: "", into: &out)
        return out
    }

    public func parameters() -> [Tensor] { namedParameters().map { $0.1 } }

    /// (name, tensor) for every `Buffer` here and in the children: state that is not trained
    /// (BatchNorm's running statistics) but belongs in checkpoints.
    public func namedBuffers() -> [(String, Tensor)] {
        var out: [(String, Tensor)] = []
        collectBuffers(prefix: "", into: &out)
        return out
    }

    private func collectBuffers(prefix: String, into out: inout [(String, Tensor)]) {
        for case let (label?, value) in Mirror(reflecting: self).allChildren where !label.hasPrefix("_") {
            let name = prefix + label
            if let b = value as? Buffer { out.append((name, b.value)) }
            else if let m = value as? Module { m.collectBuffers(prefix: name + ".", into: &out) }
            else if let list = value as? [Module] {
                for (i, m) in list.enumerated() { m.collectBuffers(prefix: "\(name).\(i).", into: &out) }
            } else if let opt = value as? Module?, let m = opt { m.collectBuffers(prefix: name + ".", into: &out) }
        }
    }

    /// Parameters that receive gradients (not frozen).
    public func trainableParameters() -> [(String, Tensor)] { namedParameters().filter { $0.1.requiresGrad } }

    /// Direct children with their names.
    public func children() -> [(String, Module)] {
        var out: [(String, Module)] = []
        for case let (label?, value) in Mirror(reflecting: self).allChildren where !label.hasPrefix("_") {
            if let m = value as? Module { out.append((label, m)) }
            else if let list = value as? [Module] { for (i, m) in list.enumerated() { out.append(("\(label).\(i)", m)) } }
            else if let opt = value as? Module?, let m = opt { out.append((label, m)) }
        }
        return out
    }

    private func collect(prefix: String, into out: inout [(String, Tensor)]) {
        for case let (label?, value) in Mirror(reflecting: self).allChildren where !label.hasPrefix("_") {
            let name = prefix + label
            if let t = value as? Tensor { out.append((name, t)) }
            else if let opt = value as? Tensor?, let t = opt { out.append((name, t)) }
            else if let m = value as? Module { m.collect(prefix: name + ".", into: &out) }
            else if let list = value as? [Module] {
                for (i, m) in list.enumerated() { m.collect(prefix: "\(name).\(i).", into: &out) }
            } else if let opt = value as? Module?, let m = opt { m.collect(prefix: name + ".", into: &out) }
        }
    }

    /// Stops gradients for every parameter here (or only those whose names are in `keys`).
    @discardableResult
    public func freeze(keys: Set<String>? = nil) -> Self {
        for (n, p) in namedParameters() where keys == nil || keys!.contains(n) { p.requiresGrad = false }
        return self
    }

    /// Lets gradients flow to every parameter here (or only those named in `keys`).
    @discardableResult
    public func unfreeze(keys: Set<String>? = nil) -> Self {
        for (n, p) in namedParameters() where keys == nil || keys!.contains(n) { p.requiresGrad = true }
        return self
    }

    /// Makes every bias trainable (BitFit), whatever the backbone.
    @discardableResult
    public func unfreezeBiases() -> Self {
        for (n, p) in namedParameters() where n.hasSuffix(".bias") { p.requiresGrad = true }
        return self
    }

    /// Sets training mode here and in every child.
    @discardableResult
    public func train(_ on: Bool = true) -> Self {
        training = on
        for (_, c) in children() { c.train(on) }
        return self
    }

    /// This module and every descendant, depth first, with their names ("" for this one).
    public func namedModules() -> [(String, Module)] {
        var out: [(String, Module)] = [("", self)]
        for (name, child) in children() {
            out += child.namedModules().map { ($0.0.isEmpty ? name : name + "." + $0.0, $0.1) }
        }
        return out
    }

    /// The state of every random generator here and in the children (Dropout's), by module name:
    /// saved with a run, so that a resumed run draws the masks an uninterrupted one would.
    public func randomStates() -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        for (name, m) in namedModules() { if let r = m as? RandomStateful { out[name] = r.randomState } }
        return out
    }

    /// Restores `randomStates()`; the names must be exactly this model's generators.
    public func restoreRandomStates(_ states: [String: UInt64]) throws {
        let generators = namedModules().compactMap { name, m in (m as? RandomStateful).map { (name, $0) } }
        let names = Set(generators.map(\.0))
        guard names == Set(states.keys) else {
            throw ModuleError("random generators differ: saved \(states.keys.sorted()), model has \(names.sorted())")
        }
        for (name, g) in generators { g.randomState = states[name]! }
    }

    public var parameterCount: Int { parameters().reduce(0) { $0 + $1.count } }
    public var trainableParameterCount: Int { trainableParameters().reduce(0) { $0 + $1.1.count } }

    /// Copies values into parameters by name. Unknown names and shape mismatches are errors naming
    /// the tensor; missing names too when `strict` (non-strict loads a subset, e.g. an adapter).
    public func load(_ values: [String: Tensor], strict: Bool = true) throws {
        let params = Dictionary(namedParameters(), uniquingKeysWith: { a, _ in a })
        let unknown = Set(values.keys).subtracting(params.keys)
        if !unknown.isEmpty { throw ModuleError("unknown parameter(s): \(unknown.sorted().prefix(5).joined(separator: ", "))") }
        if strict {
            let missing = Set(params.keys).subtracting(values.keys)
            if !missing.isEmpty { throw ModuleError("missing parameter(s): \(missing.sorted().prefix(5).joined(separator: ", "))") }
        }
        for (name, v) in values {
            guard let p = params[name] else { continue }
            guard p.shape == v.shape else { throw ModuleError("parameter \(name): expected shape \(p.shape), got \(v.shape)") }
            let src = v.float32()
            p.data.update(from: src.data, count: p.count)
        }
    }
}

/// Mirror children including superclasses' stored properties.
extension Mirror {
    var allChildren: [Mirror.Child] {
        var out = Array(children)
        var m = superclassMirror
        while let s = m { out.append(contentsOf: s.children); m = s.superclassMirror }
        return out
    }
}

/// A layer that draws random numbers while training (Dropout); its generator's state is part of a
/// run's state (`Module.randomStates()`).
public protocol RandomStateful: AnyObject {
    var randomState: UInt64 { get set }
}

public struct ModuleError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// A tensor a module keeps but does not train (BatchNorm's running mean and variance): not a
/// parameter (the optimizer never sees it, `namedParameters()` skips it), but listed by
/// `namedBuffers()` so checkpoints save and restore it. Counted as weights in the ledger.
public final class Buffer {
    public let value: Tensor
    public init(_ value: Tensor) {
        value.storage.retag(.weights)
        value.requiresGrad = false
        self.value = value
    }
}

/// Makes a trainable parameter counted as weights in the ledger.
public func parameter(_ t: Tensor, name: String = "") -> Tensor {
    t.storage.retag(.weights)
    t.requiresGrad = true
    t.name = name
    return t
}
