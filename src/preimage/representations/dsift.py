"""placeholder: HOG lands here"""
