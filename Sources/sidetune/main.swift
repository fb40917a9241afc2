import SideTuneCLI

SideTuneCommand.main()
