"""The dlib face-recognition ResNet as a torch module (``network``) and the parser of its ``.dat`` file."""
