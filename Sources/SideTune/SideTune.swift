// One import for the library: `import SideTune` brings the engine, the layers, the formats and
// tokenizers, the backbones, the methods and the trainer (each is also a product of its own).
@_exported import SideTuneBackbones
@_exported import SideTuneData
@_exported import SideTuneEngine
@_exported import SideTuneFormats
@_exported import SideTuneMethods
@_exported import SideTuneNN
@_exported import SideTuneTokenizers
@_exported import SideTuneTrainer
